//! Output masking for `zopp run --mask`: replaces every secret value in a child's output with
//! [`REPLACEMENT`], even when a value arrives split across reads.
//!
//! Matching is leftmost-longest and non-overlapping, exactly as if the whole stream were
//! masked at once: at the leftmost position where any value starts, the longest value that
//! starts there is replaced, and the search resumes after it. The streaming [`Masker`] gives
//! the same result for any split of the input into chunks, holding back only the longest
//! suffix that could still grow into a value.
//!
//! The matcher is a small Aho–Corasick automaton built here rather than taken from a crate,
//! because streaming needs one thing a general-purpose matcher does not expose: for the
//! current automaton state, how long a suffix could still become a match (`hold`). Owning the
//! tables also lets them be zeroized on drop, since they spell out every value.

use std::fmt;
use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

/// What a masked value is replaced with.
pub const REPLACEMENT: &str = "<concealed by zopp>";

/// Values shorter than this many bytes are not masked: masking `1` or `on` would shred output
/// without protecting anything.
pub const MIN_MASKED_LEN: usize = 4;

const ROOT: u32 = 0;

/// A byte-wise Aho–Corasick automaton over the values, in compact (CSR) form.
struct Automaton {
    /// Node `n`'s edges are `edge_bytes[edge_start[n]..edge_start[n + 1]]`, sorted.
    edge_start: Vec<u32>,
    edge_bytes: Vec<u8>,
    edge_targets: Vec<u32>,
    /// Failure link: the node of the longest proper suffix of `n`'s string that is in the trie.
    fail: Vec<u32>,
    /// Length of the longest value that is a suffix of `n`'s string, 0 if none.
    longest_match: Vec<u32>,
    /// Length of the longest suffix of `n`'s string that is a proper prefix of some value,
    /// i.e. that more input could still turn into a match.
    hold: Vec<u32>,
}

impl Automaton {
    fn new<I>(values: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        // Build a plain trie first, children kept sorted.
        let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
        let mut targets: Vec<Vec<u32>> = vec![Vec::new()];
        let mut depth: Vec<u32> = vec![0];
        let mut terminal: Vec<bool> = vec![false];
        for value in values {
            let value = value.as_ref();
            if value.len() < MIN_MASKED_LEN {
                continue;
            }
            let mut node = ROOT as usize;
            for &b in value {
                node = match keys[node].binary_search(&b) {
                    Ok(i) => targets[node][i] as usize,
                    Err(i) => {
                        let child = keys.len();
                        keys[node].insert(i, b);
                        targets[node].insert(i, node_id(child));
                        keys.push(Vec::new());
                        targets.push(Vec::new());
                        depth.push(depth[node] + 1);
                        terminal.push(false);
                        child
                    }
                };
            }
            terminal[node] = true;
        }

        let nodes = keys.len();
        let mut edge_start = Vec::with_capacity(nodes + 1);
        let mut edge_bytes = Vec::with_capacity(nodes.saturating_sub(1));
        let mut edge_targets = Vec::with_capacity(nodes.saturating_sub(1));
        edge_start.push(0);
        for (k, t) in keys.iter_mut().zip(&targets) {
            edge_bytes.extend_from_slice(k);
            edge_targets.extend_from_slice(t);
            edge_start.push(node_id(edge_bytes.len()));
            k.zeroize();
        }
        let mut automaton = Automaton {
            edge_start,
            edge_bytes,
            edge_targets,
            fail: vec![ROOT; nodes],
            longest_match: vec![0; nodes],
            hold: vec![0; nodes],
        };

        // Breadth-first, so every failure target (a shorter string) is finished first.
        let mut queue = std::collections::VecDeque::with_capacity(nodes);
        queue.push_back(ROOT);
        while let Some(node) = queue.pop_front() {
            let n = node as usize;
            if node != ROOT {
                let f = automaton.fail[n] as usize;
                automaton.longest_match[n] = if terminal[n] {
                    depth[n]
                } else {
                    automaton.longest_match[f]
                };
                automaton.hold[n] = if automaton.has_children(node) {
                    depth[n]
                } else {
                    automaton.hold[f]
                };
            }
            let (start, end) = automaton.edges(node);
            for e in start..end {
                let (b, child) = (automaton.edge_bytes[e], automaton.edge_targets[e]);
                automaton.fail[child as usize] = if node == ROOT {
                    ROOT
                } else {
                    let mut f = automaton.fail[n];
                    loop {
                        if let Some(next) = automaton.child(f, b) {
                            break next;
                        }
                        if f == ROOT {
                            break ROOT;
                        }
                        f = automaton.fail[f as usize];
                    }
                };
                queue.push_back(child);
            }
        }
        automaton
    }

    fn edges(&self, node: u32) -> (usize, usize) {
        let n = node as usize;
        (self.edge_start[n] as usize, self.edge_start[n + 1] as usize)
    }

    fn has_children(&self, node: u32) -> bool {
        let (start, end) = self.edges(node);
        start < end
    }

    fn child(&self, node: u32, b: u8) -> Option<u32> {
        let (start, end) = self.edges(node);
        self.edge_bytes[start..end]
            .binary_search(&b)
            .ok()
            .map(|i| self.edge_targets[start + i])
    }

    /// The state after reading `b` in `state`.
    fn step(&self, mut state: u32, b: u8) -> u32 {
        loop {
            if let Some(next) = self.child(state, b) {
                return next;
            }
            if state == ROOT {
                return ROOT;
            }
            state = self.fail[state as usize];
        }
    }

    fn is_empty(&self) -> bool {
        !self.has_children(ROOT)
    }
}

impl Drop for Automaton {
    fn drop(&mut self) {
        // The edge labels spell out every value.
        self.edge_bytes.zeroize();
    }
}

fn node_id(n: usize) -> u32 {
    u32::try_from(n).expect("values total far less than 4 GiB")
}

/// Masks one output stream. Build one with [`Masker::new`], and one per further stream with
/// [`Masker::fresh`] (they share the compiled values).
pub struct Masker {
    automaton: Arc<Automaton>,
    /// Bytes not yet emitted; `pending[origin..]` is where matching resumes.
    pending: Zeroizing<Vec<u8>>,
    origin: usize,
    /// How many bytes after `origin` the automaton has read.
    scanned: usize,
    /// Automaton state after reading `pending[origin..origin + scanned]` from the root.
    state: u32,
    /// The leftmost (then longest) complete match seen since `origin`, relative to `origin`.
    best: Option<(usize, usize)>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Masker(..)")
    }
}

impl Masker {
    /// A masker for `values`; values shorter than [`MIN_MASKED_LEN`] bytes are ignored.
    pub fn new<I>(values: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        Self::with_automaton(Arc::new(Automaton::new(values)))
    }

    fn with_automaton(automaton: Arc<Automaton>) -> Self {
        Self {
            automaton,
            pending: Zeroizing::new(Vec::new()),
            origin: 0,
            scanned: 0,
            state: ROOT,
            best: None,
        }
    }

    /// A masker for another stream (say stderr next to stdout) with the same values and empty
    /// state.
    pub fn fresh(&self) -> Self {
        Self::with_automaton(Arc::clone(&self.automaton))
    }

    /// Masks a complete input at once (for example a rendered manifest), leaving `self` as is.
    pub fn mask(&self, input: &[u8]) -> Vec<u8> {
        let mut masker = self.fresh();
        let mut out = masker.push(input);
        out.extend_from_slice(&masker.finish());
        out
    }

    /// Feeds the next chunk of the stream; returns the bytes that are now safe to emit.
    ///
    /// Only the longest suffix of the stream that could still grow into a value is held back.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.automaton.is_empty() {
            return chunk.to_vec();
        }
        self.append(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        self.drain(&mut out, false);
        out
    }

    /// Ends the stream: returns every byte still held back, masked.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pending.len());
        self.drain(&mut out, true);
        out
    }

    /// Appends `chunk` to `pending`, moving to a larger buffer by hand so the old one is
    /// zeroized (a plain `Vec` growth would free it with secret bytes in it).
    fn append(&mut self, chunk: &[u8]) {
        let needed = self.pending.len() + chunk.len();
        if needed > self.pending.capacity() {
            let mut bigger =
                Zeroizing::new(Vec::with_capacity(needed.max(2 * self.pending.capacity())));
            bigger.extend_from_slice(&self.pending);
            self.pending = bigger;
        }
        self.pending.extend_from_slice(chunk);
    }

    /// Emits every decided byte (all of them when `at_end`) into `out`.
    fn drain(&mut self, out: &mut Vec<u8>, at_end: bool) {
        let automaton = Arc::clone(&self.automaton);
        loop {
            let available = self.pending.len() - self.origin;
            let mut committed = false;
            while self.scanned < available {
                let b = self.pending[self.origin + self.scanned];
                self.state = automaton.step(self.state, b);
                self.scanned += 1;
                let len = automaton.longest_match[self.state as usize] as usize;
                if len > 0 {
                    // The longest value ending here starts earliest; a later end with the same
                    // start is a longer value.
                    let start = self.scanned - len;
                    let better = match self.best {
                        None => true,
                        Some((s, e)) => start < s || (start == s && self.scanned > e),
                    };
                    if better {
                        self.best = Some((start, self.scanned));
                    }
                }
                // No match can start before `hold_start` and still be incomplete, so a match
                // starting there is final: nothing earlier or longer can turn up.
                let hold_start = self.scanned - automaton.hold[self.state as usize] as usize;
                if let Some((s, e)) = self.best {
                    if s < hold_start {
                        self.commit(out, s, e);
                        committed = true;
                        break;
                    }
                }
            }
            if committed {
                continue;
            }
            if at_end {
                if let Some((s, e)) = self.best {
                    self.commit(out, s, e);
                    continue;
                }
                out.extend_from_slice(&self.pending[self.origin..]);
                self.reset_all();
                return;
            }
            // Everything before the longest suffix that could still become a value is safe.
            // (Here no complete match starts before it, and the automaton's state spells
            // exactly that suffix, so matching can resume from it.)
            let hold_start = self.scanned - automaton.hold[self.state as usize] as usize;
            out.extend_from_slice(&self.pending[self.origin..self.origin + hold_start]);
            let keep_from = self.origin + hold_start;
            self.pending.drain(..keep_from);
            self.origin = 0;
            self.scanned -= hold_start;
            self.best = self.best.map(|(s, e)| (s - hold_start, e - hold_start));
            return;
        }
    }

    /// Emits the bytes before match `[s, e)` and the replacement, and restarts matching after it.
    fn commit(&mut self, out: &mut Vec<u8>, s: usize, e: usize) {
        out.extend_from_slice(&self.pending[self.origin..self.origin + s]);
        out.extend_from_slice(REPLACEMENT.as_bytes());
        self.origin += e;
        self.scanned = 0;
        self.state = ROOT;
        self.best = None;
    }

    fn reset_all(&mut self) {
        self.pending.zeroize();
        self.origin = 0;
        self.scanned = 0;
        self.state = ROOT;
        self.best = None;
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn masked(values: &[&str], input: &str) -> String {
        let masker = Masker::new(values.iter().map(|v| v.as_bytes()));
        String::from_utf8(masker.mask(input.as_bytes())).unwrap()
    }

    #[rstest]
    #[case::simple(&["hunter2!"], "pw=hunter2! ok", "pw=<concealed by zopp> ok")]
    #[case::repeated(&["abcd"], "abcdabcd-abcd", "<concealed by zopp><concealed by zopp>-<concealed by zopp>")]
    #[case::short_values_ignored(&["abc", "on"], "abc on", "abc on")]
    #[case::longest_wins(&["abcd", "abcdef"], "xabcdefx", "x<concealed by zopp>x")]
    #[case::longest_wins_reversed(&["abcdef", "abcd"], "xabcdex", "x<concealed by zopp>ex")]
    #[case::leftmost_wins(&["bcdef", "abcd"], "abcdef", "<concealed by zopp>ef")]
    #[case::overlap_inside(&["cdef", "abcdefgh"], "abcdefgX", "ab<concealed by zopp>gX")]
    #[case::no_values(&[], "anything", "anything")]
    #[case::unicode(&["pässwörd"], "x pässwörd y", "x <concealed by zopp> y")]
    fn masks(#[case] values: &[&str], #[case] input: &str, #[case] expected: &str) {
        assert_eq!(masked(values, input), expected);
    }

    #[test]
    fn holds_back_only_a_possible_prefix() {
        let mut masker = Masker::new(["secret-value"]);
        assert_eq!(masker.push(b"log line\nsecr"), b"log line\n");
        assert_eq!(masker.push(b"et-"), b"");
        assert_eq!(masker.push(b"valu"), b"");
        assert_eq!(masker.push(b"e done\n"), b"<concealed by zopp> done\n");
        assert_eq!(masker.push(b"secret-vax"), b"secret-vax");
        assert!(masker.finish().is_empty());
    }

    #[test]
    fn finish_releases_an_incomplete_prefix() {
        let mut masker = Masker::new(["secret-value"]);
        assert_eq!(masker.push(b"ends with secret-va"), b"ends with ");
        assert_eq!(masker.finish(), b"secret-va");
    }

    #[test]
    fn fresh_maskers_share_values_not_state() {
        let mut out = Masker::new(["abcdef"]);
        let mut err = out.fresh();
        assert_eq!(out.push(b"abc"), b"");
        assert_eq!(err.push(b"def"), b"def");
        assert_eq!(out.push(b"def"), REPLACEMENT.as_bytes());
    }

    #[test]
    fn debug_hides_values() {
        assert_eq!(format!("{:?}", Masker::new(["topsecret"])), "Masker(..)");
    }

    /// Leftmost-longest masking of a whole input, the slow obvious way.
    fn reference_mask(values: &[Vec<u8>], input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            let longest = values
                .iter()
                .filter(|v| v.len() >= MIN_MASKED_LEN && input[i..].starts_with(v))
                .map(Vec::len)
                .max();
            match longest {
                Some(len) => {
                    out.extend_from_slice(REPLACEMENT.as_bytes());
                    i += len;
                }
                None => {
                    out.push(input[i]);
                    i += 1;
                }
            }
        }
        out
    }

    /// Splits `input` at the given cut points (taken modulo its length).
    fn chunks(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|c| {
                if input.is_empty() {
                    0
                } else {
                    c % (input.len() + 1)
                }
            })
            .collect();
        points.push(0);
        points.push(input.len());
        points.sort_unstable();
        points
            .windows(2)
            .map(|w| input[w[0]..w[1]].to_vec())
            .collect()
    }

    // Bytes that never occur in REPLACEMENT, so a masked output can only contain a value if
    // masking missed it; a small alphabet makes overlaps and near misses common.
    const ALPHABET: &[u8] = b"qwx1\xff";

    fn values_strategy() -> impl proptest::strategy::Strategy<Value = Vec<Vec<u8>>> {
        use proptest::prelude::*;
        prop::collection::vec(
            prop::collection::vec(prop::sample::select(ALPHABET), 1..9),
            0..6,
        )
    }

    fn input_strategy() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop::collection::vec(
            prop_oneof![
                8 => prop::sample::select(ALPHABET),
                1 => prop::sample::select(b"a\n<".as_slice()),
            ],
            0..160,
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        #[test]
        fn any_split_gives_the_batch_result(
            values in values_strategy(),
            input in input_strategy(),
            cuts in proptest::collection::vec(0usize..1000, 0..12),
        ) {
            let mut masker = Masker::new(&values);
            let mut out = Vec::new();
            for chunk in chunks(&input, &cuts) {
                out.extend(masker.push(&chunk));
                // What is held back must be a proper prefix of some value: anything more
                // would delay output that can no longer be part of a secret.
                let held = &masker.pending[masker.origin..];
                proptest::prop_assert!(
                    held.is_empty()
                        || values.iter().any(|v| v.len() >= MIN_MASKED_LEN
                            && v.len() > held.len()
                            && v.starts_with(held)),
                    "held back {:?}", held
                );
            }
            out.extend(masker.finish());
            proptest::prop_assert_eq!(&out, &reference_mask(&values, &input));
            for value in values.iter().filter(|v| v.len() >= MIN_MASKED_LEN) {
                proptest::prop_assert!(
                    !out.windows(value.len()).any(|w| w == value.as_slice()),
                    "{:?} survived masking", value
                );
            }
        }

        #[test]
        fn byte_at_a_time_gives_the_batch_result(
            values in values_strategy(),
            input in input_strategy(),
        ) {
            let mut masker = Masker::new(&values);
            let mut out = Vec::new();
            for &b in &input {
                out.extend(masker.push(&[b]));
            }
            out.extend(masker.finish());
            proptest::prop_assert_eq!(out, reference_mask(&values, &input));
        }
    }
}
