//! The UIDs of a selected mailbox by message sequence number, stored as
//! runs of consecutive UIDs: a mailbox of 10,000 messages without gaps is
//! one run (8 bytes) instead of 40 KB, which is most of what an idle
//! session would otherwise hold.

/// Runs `(first uid, sequence index of that uid)`, increasing in both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UidList {
    runs: Vec<(u32, u32)>,
    len: u32,
}

impl UidList {
    pub fn new() -> UidList {
        UidList::default()
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length of run `r`.
    fn run_len(&self, r: usize) -> u32 {
        let next = self.runs.get(r + 1).map_or(self.len, |n| n.1);
        next - self.runs[r].1
    }

    /// A list from (first, last) runs in increasing order, as the store's
    /// `uid_runs` index holds them.
    pub fn from_runs(runs: &[(u32, u32)]) -> UidList {
        let mut list = UidList::new();
        for &(first, last) in runs {
            list.push_run(first, last);
        }
        list
    }

    /// Appends the UIDs `first..=last`, all larger than every one held.
    pub fn push_run(&mut self, first: u32, last: u32) {
        if last < first {
            return;
        }
        let count = last - first + 1;
        match self.runs.last() {
            Some(&(f, start)) if f + (self.len - start) == first => {}
            _ => self.runs.push((first, self.len)),
        }
        self.len += count;
    }

    /// Appends a UID larger than every one held.
    pub fn push(&mut self, uid: u32) {
        if let Some(&(first, start)) = self.runs.last()
            && first + (self.len - start) == uid
        {
            self.len += 1;
            return;
        }
        self.runs.push((uid, self.len));
        self.len += 1;
    }

    /// The UID at sequence index `i` (0-based).
    pub fn get(&self, i: usize) -> Option<u32> {
        if i >= self.len() {
            return None;
        }
        let i = i as u32;
        let r = self.runs.partition_point(|&(_, start)| start <= i) - 1;
        let (first, start) = self.runs[r];
        Some(first + (i - start))
    }

    pub fn last(&self) -> Option<u32> {
        self.len.checked_sub(1).and_then(|i| self.get(i as usize))
    }

    /// Like `slice::binary_search`: the index of `uid`, or where it would go.
    pub fn binary_search(&self, uid: &u32) -> Result<usize, usize> {
        let uid = *uid;
        let r = self.runs.partition_point(|&(first, _)| first <= uid);
        if r == 0 {
            return Err(0);
        }
        let (first, start) = self.runs[r - 1];
        let offset = uid - first;
        if offset < self.run_len(r - 1) {
            Ok((start + offset) as usize)
        } else {
            Err((start + self.run_len(r - 1)) as usize)
        }
    }

    /// The number of UIDs below `uid` (the first index whose UID >= `uid`).
    pub fn count_below(&self, uid: u32) -> usize {
        match self.binary_search(&uid) {
            Ok(i) | Err(i) => i,
        }
    }

    /// Removes the UID at sequence index `i` (an expunge).
    pub fn remove(&mut self, i: usize) {
        if i >= self.len() {
            return;
        }
        let i = i as u32;
        let r = self.runs.partition_point(|&(_, start)| start <= i) - 1;
        let (first, start) = self.runs[r];
        let run_len = self.run_len(r);
        let offset = i - start;
        // Split the run around the removed UID, then shift later runs.
        let mut replacement = Vec::with_capacity(2);
        if offset > 0 {
            replacement.push((first, start));
        }
        if offset + 1 < run_len {
            replacement.push((first + offset + 1, start + offset));
        }
        self.runs.splice(r..=r, replacement.iter().copied());
        let shifted_from = r + replacement.len();
        for run in &mut self.runs[shifted_from..] {
            run.1 -= 1;
        }
        self.len -= 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.runs.len()).flat_map(move |r| {
            let first = self.runs[r].0;
            (0..self.run_len(r)).map(move |k| first + k)
        })
    }

    /// UIDs from sequence index `start` on, with their indexes.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.iter().enumerate().skip(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_vector() {
        let mut plain: Vec<u32> = Vec::new();
        let mut list = UidList::new();
        for uid in (1..60).chain(70..75).chain([80, 90, 91]) {
            plain.push(uid);
            list.push(uid);
        }
        assert_eq!(list.runs.len(), 4);
        let check = |plain: &Vec<u32>, list: &UidList| {
            assert_eq!(list.iter().collect::<Vec<_>>(), *plain);
            assert_eq!(list.len(), plain.len());
            assert_eq!(list.last(), plain.last().copied());
            for (i, &u) in plain.iter().enumerate() {
                assert_eq!(list.get(i), Some(u));
            }
            assert_eq!(list.get(plain.len()), None);
            for uid in 0..100 {
                assert_eq!(
                    list.binary_search(&uid),
                    plain.binary_search(&uid),
                    "uid {uid}"
                );
            }
        };
        check(&plain, &list);
        for uid in [1, 30, 59, 72, 80, 91, 2] {
            let i = plain.binary_search(&uid).unwrap();
            plain.remove(i);
            list.remove(i);
            check(&plain, &list);
        }
        while !plain.is_empty() {
            plain.remove(0);
            list.remove(0);
            check(&plain, &list);
        }
        assert!(list.runs.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn random_operations(uids in proptest::collection::btree_set(1u32..500, 0..200), removals in proptest::collection::vec(0usize..200, 0..50)) {
            let mut plain: Vec<u32> = uids.into_iter().collect();
            let mut list = UidList::new();
            for &u in &plain { list.push(u); }
            for r in removals {
                if plain.is_empty() { break; }
                let i = r % plain.len();
                plain.remove(i);
                list.remove(i);
            }
            proptest::prop_assert_eq!(list.iter().collect::<Vec<_>>(), plain.clone());
            // The same list built from its runs, as SELECT builds it.
            let mut runs: Vec<(u32, u32)> = Vec::new();
            for &u in &plain {
                match runs.last_mut() {
                    Some(r) if r.1 + 1 == u => r.1 = u,
                    _ => runs.push((u, u)),
                }
            }
            proptest::prop_assert_eq!(&UidList::from_runs(&runs), &list);
            for uid in 0..510 {
                proptest::prop_assert_eq!(list.binary_search(&uid), plain.binary_search(&uid));
            }
        }
    }
}
