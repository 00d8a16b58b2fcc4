#!/usr/bin/env python3
"""pimail scan against clamscan: same signature files (ClamAV formats, made
here; no freshclam), same generated corpus of raw emails carrying Debian's
clamav-testfiles and EICAR, in the same run.

Reports verdict agreement, wall time and MB/s including start-up, peak RSS,
and how load time and RSS grow with 10x and 100x more generated hash and
body signatures. Usage: benches/scan/run.sh (builds the release binary and
installs clamav + clamav-testfiles first)."""
import base64, binascii, hashlib, io, os, random, re, shutil, subprocess, sys, time, zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = os.environ.get("SCAN_BENCH_DIR", os.path.join(ROOT, "target", "scan-bench"))
PIMAIL = os.environ.get("PIMAIL", os.path.join(ROOT, "target", "release", "pimail"))
TESTFILES = "/usr/share/clamav-testfiles"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
# Files whose container pimail implements (plain, zip with every method
# but encryption, gzip, bzip2, tar, SZDD, BinHex, RTF objects, attached
# messages, 7z, OLE2 streams and PowerPoint embedded objects, cabinets,
# HTML data: URIs, CHM, ARJ, SIS, UPX, NSIS, InstallShield, compiled AutoIt
# scripts, the PE packers ASPack, MEW, Petite, PESpin, Upack, WWPack32 and
# yC); the rest need unpackers pimail does not
# have (other PE packers, PDF, TNEF...).
IN_SCOPE = {"clam.exe", "clam.zip", "eicar.com", "clam.bz2.zip", "clam.d64.zip", "clam.impl.zip",
            "clam.exe.bz2", "clam.tar.gz", "clam_cache_emax.tgz", "clam.exe.szdd", "clam.exe.binhex",
            "clam.exe.rtf", "clam.exe.mbox.base64", "clam.exe.mbox.uu", "clam.mail",
            "clam.7z", "clam.ole.doc", "clam.ppt", "clam-upx.exe", "clam-nsis.exe",
            "clam.exe.html", "clam.chm", "clam.arj", "clam.sis", "clam.cab",
            "clam_IScab_ext.exe", "clam_IScab_int.exe", "clam_ISmsi_ext.exe", "clam_ISmsi_int.exe",
            "clam.ea05.exe", "clam.ea06.exe", "clam-wwpack.exe", "clam-yc.exe", "clam-pespin.exe",
            "clam-aspack.exe", "clam-petite.exe", "clam-mew.exe", "clam-upack.exe"}
rng = random.Random(7)


def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


HEAD = "From: sender@other.example\r\nTo: alice@example.test\r\nSubject: {s}\r\nMessage-ID: <{s}@other.example>\r\nMIME-Version: 1.0\r\n"


def attach(subject, name, data, text="Please see the attachment.\r\n"):
    b64 = crlf(base64.encodebytes(data)).decode()
    return (HEAD.format(s=subject) + 'Content-Type: multipart/mixed; boundary="=b="\r\n\r\n'
            f"--=b=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}"
            f'--=b=\r\nContent-Type: application/octet-stream; name="{name}"\r\n'
            f'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="{name}"\r\n\r\n'
            f"{b64}--=b=--\r\n").encode()


def zipped(files, method=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for n, d in files:
            z.writestr(n, d)
    return buf.getvalue()


WORDS = "the mail server board signature attachment message store quickly small memory delivery".split()


def words(n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def corpus(d):
    """Returns {filename: scope} with scope "in" or "out"."""
    os.makedirs(d)
    scope = {}

    def put(name, data, sc):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        scope[name] = sc

    payloads = [(n, open(os.path.join(TESTFILES, n), "rb").read()) for n in sorted(os.listdir(TESTFILES))]
    payloads.append(("eicar.com", EICAR))
    for name, data in payloads:
        sc = "in" if name in IN_SCOPE else "out"
        put(f"att-{name}.eml", attach(f"att-{name}", name, data), sc)
        if name in ("clam.exe", "eicar.com"):
            put(f"zip-{name}.eml", attach(f"zip-{name}", "a.zip", zipped([("readme.txt", b"hi"), (name, data)])), "in")
            put(f"stored-{name}.eml", attach(f"stored-{name}", "a.zip", zipped([(name, data)], zipfile.ZIP_STORED)), "in")
            put(f"zipzip-{name}.eml", attach(f"zipzip-{name}", "a.zip", zipped([("in.zip", zipped([(name, data)]))])), "in")
            inner = attach("inner", name, data).decode()
            put(f"nested-{name}.eml", (HEAD.format(s="fwd") + 'Content-Type: multipart/mixed; boundary="o"\r\n\r\n--o\r\n'
                 "Content-Type: text/plain\r\n\r\nForwarded.\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "--o--\r\n").encode(), "in")
            uu = b"".join(binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45))
            put(f"uu-{name}.eml", (HEAD.format(s="uu") + "\r\nbegin 644 " + name + "\r\n").encode() + crlf(uu) + b"`\r\nend\r\n", "in")
    put("qp-eicar.eml", (HEAD.format(s="qp") + "Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nTest: "
         ).encode() + EICAR.replace(b"=", b"=3D")[:40] + b"=\r\n" + EICAR[40:] + b"\r\n", "in")
    # Clean mail: text, and attachments from 10 KB to 2 MB (random bytes and zips).
    for i in range(150):
        put(f"clean-text-{i}.eml", (HEAD.format(s=f"text{i}") + "\r\n" + "\r\n".join(words(12) for _ in range(rng.randint(20, 800))) + "\r\n").encode(), "in")
    for i in range(60):
        size = int(10_000 * (200 ** (i / 59)))
        data = rng.randbytes(size)
        put(f"clean-bin-{i}.eml", attach(f"bin{i}", f"data{i}.bin", data), "in")
    for i in range(20):
        doc = ("\n".join(words(10) for _ in range(rng.randint(100, 20000)))).encode()
        put(f"clean-zip-{i}.eml", attach(f"zip{i}", f"docs{i}.zip", zipped([("doc.txt", doc), ("more.txt", doc[::-1])])), "in")
    return scope


def signatures(d, scale):
    os.makedirs(d)
    exe = open(os.path.join(TESTFILES, "clam.exe"), "rb").read()
    with open(os.path.join(d, "test.ndb"), "w") as f:
        f.write("# Test signatures for the comparison\n")
        f.write(f"Eicar-Test-Signature:0:*:{EICAR.hex()}\n")
        f.write("ClamAV-Test-File.Body:0:*:bb711040??33c05050{1-3}53535?b029*434c414d657373616765\n")
        f.write("ClamAV-Test-File.Offset:0:504:5b434c414d41565d\n")
        for _ in range(100 * scale):
            n = rng.randint(12, 40)
            h = rng.randbytes(n).hex()
            form = rng.random()
            if form < 0.25:
                h = h[:8] + "??" + h[10:]
            elif form < 0.4:
                h = h[:12] + "*" + h[12:]
            elif form < 0.5:
                h = h[:12] + "{2-8}" + h[12:]
            f.write(f"Gen.Body.{rng.getrandbits(40):x}:0:*:{h}\n")
    with open(os.path.join(d, "test.hdb"), "w") as f:
        f.write(f"{hashlib.md5(exe).hexdigest()}:{len(exe)}:ClamAV-Test-File.Md5\n")
        for _ in range(1000 * scale):
            f.write(f"{rng.randbytes(16).hex()}:{rng.randint(100, 10**7)}:Gen.Md5.{rng.getrandbits(40):x}\n")
    with open(os.path.join(d, "test.hsb"), "w") as f:
        f.write(f"{hashlib.sha256(exe).hexdigest()}:{len(exe)}:ClamAV-Test-File.Sha256\n")
        for _ in range(100 * scale):
            f.write(f"{rng.randbytes(32).hex()}:{rng.randint(100, 10**7)}:Gen.Sha256.{rng.getrandbits(40):x}\n")


LINE = re.compile(r"^(.*): (.+?) ?(OK|FOUND|ERROR)$")


def run(cmd, env=None):
    """Runs under /usr/bin/time; returns (verdicts, wall s, peak RSS MB, stderr)."""
    t = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M"] + cmd, capture_output=True, text=True, env=env)
    wall = time.monotonic() - t
    rss = int(re.search(r"MAXRSS (\d+)", p.stderr).group(1)) / 1024
    verdicts = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^(.*): (.*)$", line)
        if not m:
            continue
        path, rest = m.groups()
        name = os.path.basename(path)
        if rest == "OK":
            verdicts[name] = "OK"
        elif rest.endswith(" FOUND"):
            # clamscan marks names from unsigned databases as such.
            verdicts[name] = rest[:-6].removesuffix(".UNOFFICIAL")
        else:
            verdicts[name] = "ERROR " + rest
    return verdicts, wall, rss, p.stderr, p.returncode


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    tmp = os.path.join(WORK, "tmp")
    os.makedirs(tmp)
    env = dict(os.environ, TMPDIR=tmp)
    cdir = os.path.join(WORK, "corpus")
    scope = corpus(cdir)
    total = sum(os.path.getsize(os.path.join(cdir, n)) for n in scope)
    sig1 = os.path.join(WORK, "sigs-1x")
    signatures(sig1, 1)
    clam_cmd = lambda s, paths: ["clamscan", "--no-summary", "-r", "-d", s] + paths
    pim_cmd = lambda s, paths: [PIMAIL, "scan", "--signatures", s] + paths

    print(f"clamscan: {subprocess.run(['clamscan', '--version'], capture_output=True, text=True).stdout.strip()}")
    print(f"corpus: {len(scope)} messages, {total / 1e6:.1f} MB ({sum(1 for s in scope.values() if s == 'in')} in scope)")
    cv, cw, cr, cerr, _ = run(clam_cmd(sig1, [cdir]), env)
    pv, pw, pr, perr, _ = run(pim_cmd(sig1, [cdir]), env)
    missing = [n for n in scope if n not in cv or n not in pv]
    if missing:
        print("missing verdicts:", missing[:5], cerr[-2000:], perr[-2000:])
    agree = {"in": [0, 0], "out": [0, 0]}
    names = [0, 0]
    disagreements = []
    for n, sc in sorted(scope.items()):
        c, p = cv.get(n, "?"), pv.get(n, "?")
        same = (c == "OK") == (p == "OK")
        agree[sc][0] += same
        agree[sc][1] += 1
        if c != "OK" and p != "OK":
            names[1] += 1
            names[0] += c == p
        if not same:
            disagreements.append(f"{n} ({sc} scope): clamscan {c}, pimail {p}")
    infected = sum(1 for v in cv.values() if v != "OK")
    print(f"clamscan found {infected}, pimail found {sum(1 for v in pv.values() if v != 'OK')}")
    for sc in ("in", "out"):
        a, t = agree[sc]
        if t:
            print(f"verdict agreement, {sc} scope: {a}/{t} ({100 * a / t:.1f}%)")
    print(f"same signature name where both found: {names[0]}/{names[1]}")
    for d in disagreements:
        print("  differs:", d)
    print(f"| scanner | wall s (incl. start-up) | MB/s | peak RSS MB |")
    print(f"| clamscan | {cw:.2f} | {total / 1e6 / cw:.1f} | {cr:.1f} |")
    print(f"| pimail scan | {pw:.2f} | {total / 1e6 / pw:.1f} | {pr:.1f} |")

    # Growth with generated signatures: load (scan one small message) at 1x, 10x, 100x.
    one = os.path.join(cdir, "clean-text-0.eml")
    print("| signatures (body + hash) | clamscan load+scan s | clamscan peak RSS MB | pimail load+scan s | pimail peak RSS MB |")
    for scale in (1, 10, 100):
        s = sig1 if scale == 1 else os.path.join(WORK, f"sigs-{scale}x")
        if scale != 1:
            signatures(s, scale)
        nb = 3 + 100 * scale
        nh = 2 + 1100 * scale
        _, cw2, cr2, _, _ = run(clam_cmd(s, [one]), env)
        _, pw2, pr2, perr2, _ = run(pim_cmd(s, [one]), env)
        print(f"| {nb} + {nh} ({scale}x) | {cw2:.2f} | {cr2:.1f} | {pw2:.2f} | {pr2:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
