//! Organizational domains (RFC 7489 3.2) from public-suffix rules.
//!
//! The rule engine is the Public Suffix List's (plain rules, `*.` wildcards,
//! `!` exceptions, the implicit `*` rule), so the full list
//! (<https://publicsuffix.org/list/public_suffix_list.dat>) can be given in
//! `auth_results.public_suffix_file` and updated without a new binary. The
//! built-in list is a compact subset of the ICANN section: the second-level
//! registries of the countries whose mail is most common. A domain under a
//! suffix it lacks gets an organizational domain one label too short (e.g.
//! `com.xx`), which only makes relaxed alignment more lenient there.

use std::collections::HashSet;

/// Built-in rules (PSL syntax, one per line).
const BUILTIN: &str = "\
ac.uk\nco.uk\ngov.uk\nltd.uk\nme.uk\nnet.uk\nnhs.uk\norg.uk\nplc.uk\nsch.uk\n\
com.au\nnet.au\norg.au\nedu.au\ngov.au\nasn.au\nid.au\n\
co.nz\nnet.nz\norg.nz\nac.nz\ngovt.nz\n\
co.jp\nne.jp\nor.jp\nac.jp\ngo.jp\ngr.jp\ned.jp\nlg.jp\nad.jp\n\
com.br\nnet.br\norg.br\ngov.br\nedu.br\n\
com.cn\nnet.cn\norg.cn\ngov.cn\nedu.cn\nac.cn\n\
com.hk\nnet.hk\norg.hk\nedu.hk\ngov.hk\n\
co.in\nnet.in\norg.in\nac.in\ngov.in\nfirm.in\ngen.in\nind.in\n\
co.za\nnet.za\norg.za\nac.za\ngov.za\nedu.za\n\
com.mx\nnet.mx\norg.mx\ngob.mx\nedu.mx\n\
com.ar\nnet.ar\norg.ar\ngob.ar\nedu.ar\n\
com.tr\nnet.tr\norg.tr\ngov.tr\nedu.tr\n\
co.kr\nne.kr\nor.kr\nac.kr\ngo.kr\n\
com.sg\nnet.sg\norg.sg\nedu.sg\ngov.sg\n\
com.tw\nnet.tw\norg.tw\nedu.tw\ngov.tw\n\
co.il\nnet.il\norg.il\nac.il\ngov.il\n\
com.pl\nnet.pl\norg.pl\n\
co.at\nor.at\ngv.at\nac.at\n\
com.es\nnom.es\norg.es\n\
com.ua\nnet.ua\norg.ua\n\
com.ru\nnet.ru\norg.ru\n\
co.id\nor.id\nac.id\ngo.id\n\
com.my\nnet.my\norg.my\n\
com.ph\nnet.ph\norg.ph\n\
co.th\nin.th\nac.th\ngo.th\n\
com.vn\nnet.vn\norg.vn\n\
com.sa\nnet.sa\norg.sa\n\
com.eg\nnet.eg\norg.eg\n\
com.ng\nnet.ng\norg.ng\n\
co.ke\nor.ke\nac.ke\n\
com.pk\nnet.pk\norg.pk\n\
com.co\nnet.co\norg.co\n\
com.pe\nnet.pe\norg.pe\n\
com.ve\nnet.ve\norg.ve\n\
*.ck\n!www.ck\n\
*.bd\n\
*.kawasaki.jp\n!city.kawasaki.jp\n";

/// A set of public-suffix rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublicSuffixes {
    rules: HashSet<String>,
    wildcards: HashSet<String>,
    exceptions: HashSet<String>,
}

impl PublicSuffixes {
    /// The built-in subset.
    pub fn builtin() -> PublicSuffixes {
        PublicSuffixes::parse(BUILTIN)
    }

    /// Rules in the PSL's format: one per line, `//` comments, blank lines.
    pub fn parse(text: &str) -> PublicSuffixes {
        let mut p = PublicSuffixes::default();
        for line in text.lines() {
            let Some(rule) = line.split_whitespace().next() else {
                continue;
            };
            if rule.starts_with("//") {
                continue;
            }
            let rule = rule.to_ascii_lowercase();
            if let Some(e) = rule.strip_prefix('!') {
                p.exceptions.insert(e.to_string());
            } else if let Some(w) = rule.strip_prefix("*.") {
                p.wildcards.insert(w.to_string());
            } else {
                p.rules.insert(rule);
            }
        }
        p
    }

    /// Rules known (for a sanity check of a loaded file).
    pub fn len(&self) -> usize {
        self.rules.len() + self.wildcards.len() + self.exceptions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Labels in the public suffix of `domain` (at least 1: the implicit
    /// `*` rule).
    fn suffix_labels(&self, labels: &[&str]) -> usize {
        let n = labels.len();
        let mut best = 1;
        for i in 0..n {
            let candidate = labels[i..].join(".");
            let len = n - i;
            if self.exceptions.contains(&candidate) {
                // An exception's suffix is the rule minus its first label.
                return len - 1;
            }
            if self.rules.contains(&candidate) {
                best = best.max(len);
            }
            if i + 1 < n && self.wildcards.contains(&labels[i + 1..].join(".")) {
                best = best.max(len);
            }
        }
        best
    }

    /// The organizational domain (RFC 7489 3.2): the public suffix plus one
    /// label; `domain` itself when it is a public suffix or shorter.
    pub fn organizational_domain(&self, domain: &str) -> String {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let labels: Vec<&str> = domain.split('.').collect();
        let keep = self.suffix_labels(&labels) + 1;
        if keep >= labels.len() {
            return domain;
        }
        labels[labels.len() - keep..].join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organizational_domains() {
        let p = PublicSuffixes::builtin();
        for (d, want) in [
            ("mail.example.com", "example.com"),
            ("example.com", "example.com"),
            ("a.b.example.co.uk", "example.co.uk"),
            ("example.co.uk", "example.co.uk"),
            ("co.uk", "co.uk"),
            ("com", "com"),
            ("Foo.Example.ORG.", "example.org"),
            ("x.y.foo.ck", "y.foo.ck"),
            ("www.ck", "www.ck"),
            ("a.www.ck", "www.ck"),
            ("a.b.city.kawasaki.jp", "city.kawasaki.jp"),
        ] {
            assert_eq!(p.organizational_domain(d), want, "{d}");
        }
    }

    #[test]
    fn psl_file_format() {
        let p = PublicSuffixes::parse("// comment\n\nexample\n*.wild.example\n!ok.wild.example\n");
        assert_eq!(p.len(), 3);
        assert_eq!(p.organizational_domain("a.b.example"), "b.example");
        assert_eq!(
            p.organizational_domain("a.b.x.wild.example"),
            "b.x.wild.example"
        );
        assert_eq!(
            p.organizational_domain("a.ok.wild.example"),
            "ok.wild.example"
        );
    }
}
