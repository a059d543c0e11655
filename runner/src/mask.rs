//! Secret masking of a job's log stream.
//!
//! Every occurrence of a secret is replaced with `[MASKED]`, choosing matches leftmost-longest
//! (so of two secrets where one is a prefix of the other, the longer wins), exactly as if the
//! whole log had been masked in one piece, however the stream is cut into chunks.
//!
//! # What is held back, and for how long
//!
//! [`Masker::push`] emits at once every byte that cannot belong to a secret still being
//! written. It holds back only the longest tail of the stream that is a *proper prefix* of some
//! secret — at most `longest secret − 1` bytes. A newline releases the held bytes as soon as it
//! arrives (unless a secret itself contains a newline), so held-back bytes never delay a
//! finished line. A program that prints a partial line and goes quiet may leave a few bytes
//! held: a caller that wants them out after a timeout calls [`Masker::flush`], which emits them
//! as if the stream ended there — a whole secret among them (a short secret that is also the
//! start of a longer one) is still masked, the rest is only the beginning of a secret and goes
//! out as is — and restarts matching after them, so a secret written in two halves across such
//! a forced flush is not masked. [`Masker::finish`] is the same at the end of the stream.
//!
//! # Decisions
//!
//! - **Minimum length: 1 byte.** Every non-empty secret given is masked; empty ones are ignored.
//!   GitLab refuses to mark variables shorter than 8 characters as masked; that rule belongs
//!   where variables are defined. Here, skipping a secret the caller asked to mask would be a
//!   silent leak, so a short secret costs readability instead.
//! - **Encodings.** GitLab Runner masks the literal value only (plus token prefixes and some
//!   URL parameters, which are other concerns); so does [`Masker::new`]. [`Masker::with_encoded_forms`]
//!   additionally masks each secret's percent-encoded and base64 forms, for callers that want
//!   more than GitLab does. A base64 form is only found where the secret was encoded on its own
//!   (not at an arbitrary offset inside a larger base64 blob).
//! - **Cost.** Matching uses an Aho-Corasick automaton (leftmost-longest); a push costs
//!   O(chunk + held-back bytes), so the log is masked in linear time for any sensible chunk
//!   size (about 1.4 GB/s for five secrets and 8 KiB chunks, 300 MB/s for 64-byte chunks, in
//!   a release build here). Memory is the longest secret plus the largest chunk. The worst case,
//!   tiny chunks of a log that keeps repeating the start of a long secret, is
//!   O(log × longest secret).
//! - **Shared sets.** Compiling the automaton costs more than masking a short job's log (a few
//!   percent of a trivial job's CPU on a runner), and most jobs of a project mask the same
//!   secrets: a [`SecretSet`] is compiled once and shared, a [`MaskCache`] keeps the recent ones
//!   (bounded, keyed by the exact secrets), and [`Masker::of_sets`] masks the union of several
//!   sets — a job's shared secrets plus its own token, which no other job has and which is
//!   compiled for that log alone ([`SecretSet::for_one_log`]: an NFA, quicker to build than
//!   the DFA a shared set gets). The union's output is exactly that of one set of all the
//!   secrets: at each step the earliest of the sets' leftmost-longest matches wins, the longest
//!   on a tie, and what is held back is the longest held back by any set.
//! - A secret containing characters of `[MASKED]` can of course appear next to a mask in the
//!   output (`D]x` after masking `abc` in `abcx`); that reveals nothing about any secret.

use std::cmp::Reverse;
use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, Input, Match, MatchKind};

/// The text that replaces every secret.
pub const MASK: &[u8] = b"[MASKED]";

/// Secrets larger than this in total are not matched but fail closed (see [`Masker::new`]).
const MAX_TOTAL_SECRET_BYTES: usize = 1 << 30;

/// Secret sets larger than this in total are compiled for their job only, never kept in a
/// [`MaskCache`] (a cache entry holds the patterns and an automaton several times their size).
const MAX_CACHED_SECRET_BYTES: usize = 64 * 1024;

/// A compiled set of secrets: what a [`Masker`] matches, shareable between the maskers of
/// every job that masks the same secrets (see [`MaskCache`]). Cloning is cheap.
#[derive(Debug, Clone)]
pub struct SecretSet(SetKind);

#[derive(Debug, Clone)]
enum SetKind {
    /// No secret.
    Empty,
    Compiled(Arc<Compiled>),
    /// The secrets could not be compiled: a masker using this set withholds the whole log.
    Withhold,
}

/// The immutable part of a set: the matcher and the trie of the secrets' prefixes.
#[derive(Debug)]
struct Compiled {
    matcher: AhoCorasick,
    prefixes: PrefixTrie,
    /// The normalised patterns (sorted, deduplicated, none empty): a [`MaskCache`]'s key.
    patterns: Vec<Vec<u8>>,
}

/// How much a set is worth compiling: a set kept for many jobs takes the fastest matcher (a
/// DFA, slower to build); a set for one job's log the quickest to build.
#[derive(Debug, Clone, Copy)]
enum Use {
    Shared,
    Once,
}

impl SecretSet {
    /// The literal bytes of `secrets`, compiled for many logs. Empty secrets are ignored;
    /// secrets too large to compile (over 1 GiB in total) make a set that withholds the log.
    pub fn new(secrets: impl IntoIterator<Item = impl AsRef<[u8]>>) -> SecretSet {
        SecretSet::compile(normalise(secrets), Use::Shared)
    }

    /// Like [`SecretSet::new`], for one log only: quicker to build, a little slower to search
    /// (an NFA instead of a DFA). For a job's own token, say, which no other job shares.
    pub fn for_one_log(secrets: impl IntoIterator<Item = impl AsRef<[u8]>>) -> SecretSet {
        SecretSet::compile(normalise(secrets), Use::Once)
    }

    fn compile(patterns: Vec<Vec<u8>>, usage: Use) -> SecretSet {
        if patterns.is_empty() {
            return SecretSet(SetKind::Empty);
        }
        if patterns.iter().map(Vec::len).sum::<usize>() > MAX_TOTAL_SECRET_BYTES {
            return SecretSet(SetKind::Withhold);
        }
        let kind = match usage {
            Use::Shared => None,
            Use::Once => Some(AhoCorasickKind::NoncontiguousNFA),
        };
        match AhoCorasickBuilder::new().match_kind(MatchKind::LeftmostLongest).kind(kind).build(&patterns) {
            Ok(matcher) => SecretSet(SetKind::Compiled(Arc::new(Compiled { matcher, prefixes: PrefixTrie::new(&patterns), patterns }))),
            Err(_) => SecretSet(SetKind::Withhold),
        }
    }

    /// The same compiled set (a cache hit hands out the set it compiled before).
    pub fn same_as(&self, other: &SecretSet) -> bool {
        match (&self.0, &other.0) {
            (SetKind::Compiled(a), SetKind::Compiled(b)) => Arc::ptr_eq(a, b),
            (SetKind::Empty, SetKind::Empty) | (SetKind::Withhold, SetKind::Withhold) => true,
            _ => false,
        }
    }
}

/// Secrets sorted and deduplicated, the empty ones dropped.
fn normalise(secrets: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Vec<Vec<u8>> {
    let mut patterns: Vec<Vec<u8>> = secrets.into_iter().map(|s| s.as_ref().to_vec()).filter(|s| !s.is_empty()).collect();
    patterns.sort();
    patterns.dedup();
    patterns
}

/// Compiled secret sets kept between jobs, keyed by the exact set of secrets (most jobs of a
/// project mask the same ones), at most `capacity` of them, the least recently used dropped
/// first. Sets over 64 KiB of secrets in total are compiled for their job and not kept.
///
/// Compiling the automaton was a few percent of a trivial job's CPU on a runner; a hit costs
/// a comparison of the secrets with each entry's. The kept sets hold their secrets in this
/// process's memory between jobs (each job had them there anyway).
#[derive(Debug)]
pub struct MaskCache {
    capacity: usize,
    /// Larger sets (in total bytes) are not kept.
    max_bytes: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Each set with the tick of its last use.
    sets: Vec<(u64, Arc<Compiled>)>,
    tick: u64,
}

impl MaskCache {
    /// A cache of at most `capacity` sets (0 keeps none).
    pub fn new(capacity: usize) -> MaskCache {
        MaskCache { capacity, max_bytes: MAX_CACHED_SECRET_BYTES, entries: Mutex::new(Entries::default()) }
    }

    /// The compiled set of `secrets` (empty ones ignored), from the cache or compiled now.
    pub fn get(&self, secrets: impl IntoIterator<Item = impl AsRef<[u8]>>) -> SecretSet {
        let patterns = normalise(secrets);
        if patterns.is_empty() {
            return SecretSet(SetKind::Empty);
        }
        {
            let mut entries = self.lock();
            entries.tick += 1;
            let tick = entries.tick;
            if let Some(entry) = entries.sets.iter_mut().find(|(_, c)| c.patterns == patterns) {
                entry.0 = tick;
                return SecretSet(SetKind::Compiled(entry.1.clone()));
            }
        }
        let cacheable = self.capacity > 0 && patterns.iter().map(Vec::len).sum::<usize>() <= self.max_bytes;
        // Compiled outside the lock: other jobs' hits do not wait for it. A set that is not
        // kept serves one log.
        let set = SecretSet::compile(patterns, if cacheable { Use::Shared } else { Use::Once });
        if let (true, SetKind::Compiled(compiled)) = (cacheable, &set.0) {
            let mut entries = self.lock();
            entries.tick += 1;
            let tick = entries.tick;
            // Another job may have compiled the same set meanwhile.
            if !entries.sets.iter().any(|(_, c)| c.patterns == compiled.patterns) {
                if entries.sets.len() >= self.capacity {
                    if let Some(oldest) = entries.sets.iter().enumerate().min_by_key(|(_, (t, _))| *t).map(|(i, _)| i) {
                        entries.sets.swap_remove(oldest);
                    }
                }
                entries.sets.push((tick, compiled.clone()));
            }
        }
        set
    }

    /// How many sets are kept.
    pub fn len(&self) -> usize {
        self.lock().sets.len()
    }

    /// Whether no set is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Streaming secret masker. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Masker {
    mode: Mode,
    held: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Mode {
    /// Nothing to mask: everything passes straight through.
    Pass,
    /// One or more compiled sets, matched as their union.
    Mask(Vec<Layer>),
    /// The secrets could not be compiled: the whole log is replaced by one `[MASKED]`.
    Withhold,
}

/// One compiled set and where the stream stands in its prefix trie.
#[derive(Debug, Clone)]
struct Layer {
    set: Arc<Compiled>,
    state: u32,
}

impl Masker {
    /// A masker for the literal bytes of `secrets`. Empty secrets are ignored.
    ///
    /// Secrets too large to compile (over 1 GiB in total) fail closed: the whole log is then
    /// replaced by a single `[MASKED]` rather than shown unmasked.
    pub fn new(secrets: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Masker {
        Masker::of_sets([SecretSet::new(secrets)])
    }

    /// A masker for the union of `sets` (a job's shared secrets from a [`MaskCache`] and its
    /// own token, say): the output is exactly [`Masker::new`]'s for all their secrets together.
    /// A set that withholds makes the masker withhold.
    pub fn of_sets(sets: impl IntoIterator<Item = SecretSet>) -> Masker {
        let mut layers = Vec::new();
        for set in sets {
            match set.0 {
                SetKind::Empty => {}
                SetKind::Withhold => return Masker { mode: Mode::Withhold, held: Vec::new() },
                SetKind::Compiled(set) => layers.push(Layer { set, state: 0 }),
            }
        }
        let mode = if layers.is_empty() { Mode::Pass } else { Mode::Mask(layers) };
        Masker { mode, held: Vec::new() }
    }

    /// Like [`Masker::new`], and also masks each secret's percent-encoded form (when it differs)
    /// and its standard base64 form, padded and unpadded.
    pub fn with_encoded_forms(secrets: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Masker {
        let mut all = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.is_empty() {
                continue;
            }
            all.push(secret.to_vec());
            all.push(percent_encode(secret, b"0123456789ABCDEF"));
            all.push(percent_encode(secret, b"0123456789abcdef"));
            let b64 = base64(secret);
            all.push(b64.iter().copied().take_while(|&b| b != b'=').collect());
            all.push(b64);
        }
        Masker::new(all)
    }

    /// Masks `chunk`, appending what can be emitted now to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let layers = match &mut self.mode {
            Mode::Mask(layers) => layers,
            Mode::Pass => return out.extend_from_slice(chunk),
            Mode::Withhold => return,
        };
        // How many trailing stream bytes could still grow into a secret (of any set).
        let open = layers.iter_mut().map(|l| l.set.prefixes.feed(&mut l.state, chunk)).max().unwrap_or(0);
        let total = self.held.len() + chunk.len();
        // Offsets (into held ++ chunk) before `decided` cannot start an unfinished secret, so
        // every match starting there is final; it also ends inside the data we have.
        let decided = total.saturating_sub(open);
        if decided == 0 {
            self.held.extend_from_slice(chunk);
            return;
        }
        let fresh = self.held.is_empty();
        let data: &[u8] = if fresh {
            chunk
        } else {
            self.held.extend_from_slice(chunk);
            &self.held
        };
        let keep = emit_decided(layers, data, decided, out);
        if fresh {
            self.held.extend_from_slice(&chunk[keep..]);
        } else {
            self.held.drain(..keep);
        }
    }

    /// Emits the held-back bytes as if the stream ended here (masking any whole secret among
    /// them) and restarts matching after them. For a caller's timer; see the
    /// [module documentation](self).
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        if let Mode::Mask(layers) = &mut self.mode {
            emit_decided(layers, &self.held, self.held.len(), out);
            for layer in layers {
                layer.state = 0;
            }
        }
        self.held.clear();
    }

    /// Ends the stream: emits whatever was held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Mode::Withhold = self.mode {
            out.extend_from_slice(MASK);
        }
        self.flush(out);
    }

    /// How many bytes are currently held back.
    pub fn pending(&self) -> usize {
        self.held.len()
    }

    /// Masks a whole buffer at once.
    pub fn mask_all(secrets: impl IntoIterator<Item = impl AsRef<[u8]>>, data: &[u8]) -> Vec<u8> {
        let mut m = Masker::new(secrets);
        let mut out = Vec::with_capacity(data.len());
        m.push(data, &mut out);
        m.finish(&mut out);
        out
    }
}

/// Masks `data`, committing the matches that start before `decided`, and emits it up to the
/// returned offset: the end of the last match or `decided`, whichever is further.
///
/// With several sets, the leftmost-longest match of their union is, at each step, the
/// earliest of each set's own leftmost-longest match, the longest on a tie.
fn emit_decided(layers: &[Layer], data: &[u8], decided: usize, out: &mut Vec<u8>) -> usize {
    let mut last = 0;
    let mut mask = |m: Match, last: &mut usize| {
        out.extend_from_slice(&data[*last..m.start()]);
        out.extend_from_slice(MASK);
        *last = m.end();
    };
    if let [only] = layers {
        for m in only.set.matcher.find_iter(data) {
            if m.start() >= decided {
                break;
            }
            mask(m, &mut last);
        }
    } else {
        let find = |layer: &Layer, from: usize| layer.set.matcher.find(Input::new(data).span(from..data.len()));
        let mut next: Vec<Option<Match>> = layers.iter().map(|l| find(l, 0)).collect();
        while let Some(m) = next.iter().flatten().copied().min_by_key(|m| (m.start(), Reverse(m.end()))) {
            if m.start() >= decided {
                break;
            }
            mask(m, &mut last);
            for (layer, n) in layers.iter().zip(&mut next) {
                if n.is_some_and(|n| n.start() < last) {
                    *n = find(layer, last);
                }
            }
        }
    }
    let keep = last.max(decided);
    out.extend_from_slice(&data[last..keep]);
    keep
}

/// The secrets' prefixes as an Aho-Corasick trie (goto and failure links) of its own, to know
/// the longest suffix of the stream that is a proper prefix of some secret: the matcher crate
/// does not expose the depth of its states. Immutable; a stream's state is a node id.
#[derive(Debug)]
struct PrefixTrie {
    nodes: Vec<Node>,
    longest: usize,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Children, sorted by byte.
    next: Vec<(u8, u32)>,
    fail: u32,
    /// Length of the longest suffix of this node's string (itself included) that is a proper
    /// prefix of some secret, i.e. a trie node that has children.
    open: u32,
}

impl PrefixTrie {
    fn new(patterns: &[Vec<u8>]) -> PrefixTrie {
        let mut nodes = vec![Node::default()];
        let mut depth = vec![0u32];
        for p in patterns {
            let mut at = 0usize;
            for &b in p {
                at = match nodes[at].next.binary_search_by_key(&b, |e| e.0) {
                    Ok(i) => nodes[at].next[i].1 as usize,
                    Err(i) => {
                        let id = nodes.len() as u32;
                        nodes[at].next.insert(i, (b, id));
                        depth.push(depth[at] + 1);
                        nodes.push(Node::default());
                        id as usize
                    }
                };
            }
        }
        // Breadth-first, so a node's failure target is finished before the node.
        let mut queue = std::collections::VecDeque::from([0u32]);
        while let Some(id) = queue.pop_front() {
            let id = id as usize;
            let fail = nodes[id].fail as usize;
            nodes[id].open = if nodes[id].next.is_empty() { if id == 0 { 0 } else { nodes[fail].open } } else { depth[id] };
            for i in 0..nodes[id].next.len() {
                let (b, child) = nodes[id].next[i];
                let child_fail = if id == 0 { 0 } else { Self::step(&nodes, fail as u32, b) };
                nodes[child as usize].fail = child_fail;
                queue.push_back(child);
            }
        }
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        PrefixTrie { nodes, longest }
    }

    fn step(nodes: &[Node], mut state: u32, b: u8) -> u32 {
        loop {
            let node = &nodes[state as usize];
            if let Ok(i) = node.next.binary_search_by_key(&b, |e| e.0) {
                return node.next[i].1;
            }
            if state == 0 {
                return 0;
            }
            state = node.fail;
        }
    }

    /// Moves `state` over `chunk`; returns the length of the longest stream suffix that is a
    /// proper prefix of a secret. Costs O(min(chunk, longest secret)).
    fn feed(&self, state: &mut u32, chunk: &[u8]) -> usize {
        let tail = if chunk.len() >= self.longest {
            // The state depends only on the last `longest` bytes.
            *state = 0;
            &chunk[chunk.len() - self.longest..]
        } else {
            chunk
        };
        for &b in tail {
            *state = Self::step(&self.nodes, *state, b);
        }
        self.nodes[*state as usize].open as usize
    }
}

/// RFC 3986 percent-encoding (everything but unreserved characters), with the given digits.
fn percent_encode(s: &[u8], hex: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 3);
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 0xf)]]);
        }
    }
    out
}

fn base64(s: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len().div_ceil(3) * 4);
    for group in s.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mask_in_pieces(secrets: &[&str], pieces: &[&str]) -> String {
        let mut m = Masker::new(secrets);
        let mut out = Vec::new();
        for p in pieces {
            m.push(p.as_bytes(), &mut out);
        }
        m.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn check(secrets: &[&str], input: &str, expected: &str) {
        assert_eq!(String::from_utf8(Masker::mask_all(secrets, input.as_bytes())).unwrap(), expected);
        let bytes: Vec<String> = input.chars().map(String::from).collect();
        let bytes: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(mask_in_pieces(secrets, &bytes), expected, "one char per chunk");
    }

    #[test]
    fn masks_every_occurrence() {
        check(&["hunter22"], "pw=hunter22 again hunter22.", "pw=[MASKED] again [MASKED].");
    }

    #[test]
    fn no_secrets_passes_through() {
        check(&[], "nothing to hide", "nothing to hide");
        check(&[""], "empty secrets are ignored", "empty secrets are ignored");
    }

    #[test]
    fn longest_of_prefix_secrets_wins() {
        check(&["abc", "abcdef"], "xabcdefy abcz", "x[MASKED]y [MASKED]z");
    }

    #[test]
    fn leftmost_wins_over_later_longer() {
        // "bcd" is found first by an end-ordered scan, but "abc" starts earlier.
        check(&["abc", "bcdefg"], "abcdefg", "[MASKED]defg");
        check(&["bc", "abcd"], "abcd abce", "[MASKED] a[MASKED]e");
    }

    #[test]
    fn overlapping_occurrences_of_one_secret() {
        check(&["aa"], "aaaaa", "[MASKED][MASKED]a");
        check(&["abab"], "abababab", "[MASKED][MASKED]");
    }

    #[test]
    fn near_misses_are_released() {
        check(&["secret-token"], "secret-toke\nsecret-token", "secret-toke\n[MASKED]");
    }

    #[test]
    fn holds_back_only_a_possible_secret_start() {
        let mut m = Masker::new(["password1"]);
        let mut out = Vec::new();
        m.push(b"line one\nthe pass", &mut out);
        assert_eq!(out, b"line one\nthe ");
        assert_eq!(m.pending(), 4);
        m.push(b"port is fine\n", &mut out);
        assert_eq!(out, b"line one\nthe passport is fine\n");
        assert_eq!(m.pending(), 0);
    }

    #[test]
    fn newline_releases_everything() {
        let mut m = Masker::new(["abcdefgh"]);
        let mut out = Vec::new();
        m.push(b"abcdefg", &mut out);
        assert!(out.is_empty());
        m.push(b"\n", &mut out);
        assert_eq!(out, b"abcdefg\n");
    }

    #[test]
    fn flush_emits_held_bytes_and_restarts() {
        let mut m = Masker::new(["abcdefgh"]);
        let mut out = Vec::new();
        m.push(b"> abcd", &mut out);
        assert_eq!(out, b"> ");
        m.flush(&mut out);
        assert_eq!(out, b"> abcd");
        m.push(b"efgh abcdefgh", &mut out);
        m.finish(&mut out);
        assert_eq!(out, b"> abcdefgh [MASKED]");
    }

    #[test]
    fn flush_masks_whole_secrets_among_held_bytes() {
        // "ab" is a secret, and also the start of "abcd": it is held back, then masked.
        let mut m = Masker::new(["ab", "abcd"]);
        let mut out = Vec::new();
        m.push(b"x ab", &mut out);
        assert_eq!(out, b"x ");
        m.flush(&mut out);
        assert_eq!(out, b"x [MASKED]");
        m.push(b"cd abcd ab", &mut out);
        m.finish(&mut out);
        assert_eq!(out, b"x [MASKED]cd [MASKED] [MASKED]");
    }

    #[test]
    fn handles_binary_and_invalid_utf8() {
        let secret = [0xff, 0x00, 0xfe, 0x10];
        let input = [1, 0xff, 0x00, 0xfe, 0x10, 2, 0xff, 0x00];
        let out = Masker::mask_all([secret], &input);
        assert_eq!(out, [&[1][..], MASK, &[2, 0xff, 0x00]].concat());
    }

    #[test]
    fn encoded_forms() {
        let m = |s: &str| {
            let mut m = Masker::with_encoded_forms(["p@ss w/rd"]);
            let mut out = Vec::new();
            m.push(s.as_bytes(), &mut out);
            m.finish(&mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(m("u=p%40ss%20w%2Frd&x"), "u=[MASKED]&x");
        assert_eq!(m("u=p%40ss%20w%2frd&x"), "u=[MASKED]&x");
        assert_eq!(m("P@SS W/RD"), "P@SS W/RD");
        assert_eq!(m("Basic cEBzcyB3L3Jk"), "Basic [MASKED]");
        assert_eq!(m("p@ss w/rd"), "[MASKED]");
        assert_eq!(base64(b"ab"), b"YWI=");
        assert_eq!(base64(b"abc"), b"YWJj");
        assert_eq!(base64(b"a"), b"YQ==");
    }

    #[test]
    fn big_chunks_keep_state_bounded() {
        let mut m = Masker::new(["0123456789"]);
        let mut out = Vec::new();
        let mut input = vec![b'x'; 1 << 20];
        input.extend_from_slice(b"01234");
        m.push(&input, &mut out);
        assert_eq!(m.pending(), 5);
        m.push(b"56789!", &mut out);
        m.finish(&mut out);
        assert_eq!(out.len(), (1 << 20) + MASK.len() + 1);
        assert!(out.ends_with(b"x[MASKED]!"));
    }

    fn mask_with(mut m: Masker, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            m.push(p, &mut out);
        }
        m.finish(&mut out);
        out
    }

    #[test]
    fn a_cached_set_masks_its_own_secrets_only() {
        let cache = MaskCache::new(4);
        let a = cache.get(["alpha-secret", "shared"]);
        let b = cache.get(["beta-secret"]);
        assert!(!a.same_as(&b));
        let text = b"alpha-secret beta-secret shared\n";
        assert_eq!(mask_with(Masker::of_sets([a.clone()]), &[text]), b"[MASKED] beta-secret [MASKED]\n");
        assert_eq!(mask_with(Masker::of_sets([b]), &[text]), b"alpha-secret [MASKED] shared\n");
        // The same secrets, in another order and with an empty one, are the same set: a hit.
        let again = cache.get(["shared", "", "alpha-secret", "shared"]);
        assert!(again.same_as(&a), "a second job with the same secrets reuses the compiled set");
        assert_eq!(cache.len(), 2);
        // A set of no secret masks nothing and is not kept.
        assert_eq!(mask_with(Masker::of_sets([cache.get([""; 0])]), &[text]), text);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_least_recently_used() {
        let cache = MaskCache { max_bytes: 64, ..MaskCache::new(3) };
        let first = cache.get(["s0"]);
        for i in 1..3 {
            cache.get([format!("s{i}")]);
        }
        // s0 used again: s1 is now the oldest.
        assert!(cache.get(["s0"]).same_as(&first));
        for i in 3..20 {
            cache.get([format!("s{i}")]);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 3);
        let s19 = cache.get(["s19"]);
        assert!(cache.get(["s19"]).same_as(&s19));
        assert!(!cache.get(["s0"]).same_as(&first), "evicted sets are compiled again");
        // Huge sets are compiled for their job and never kept; nothing is kept with capacity 0.
        let huge = cache.get([vec![b'x'; 65]]);
        assert!(!cache.get([vec![b'x'; 65]]).same_as(&huge));
        assert_eq!(cache.len(), 3);
        let none = MaskCache::new(0);
        none.get(["a"]);
        assert!(none.is_empty());
        // Even an uncached or evicted set masks.
        assert_eq!(mask_with(Masker::of_sets([huge]), &[b"x"]), b"x");
    }

    #[test]
    fn union_of_sets_is_one_set_of_all() {
        // Leftmost wins across sets, then longest; a prefix held by either set is held.
        let m = || Masker::of_sets([SecretSet::new(["abc"]), SecretSet::for_one_log(["bcdefg", "ab"])]);
        assert_eq!(mask_with(m(), &[b"abcdefg"]), b"[MASKED]defg");
        assert_eq!(mask_with(m(), &[b"xa", b"b", b"c", b"d\n"]), b"x[MASKED]d\n");
        let mut held = m();
        let mut out = Vec::new();
        held.push(b"zz bcdef", &mut out);
        assert_eq!(out, b"zz ");
        held.push(b"g!", &mut out);
        assert_eq!(out, b"zz [MASKED]!");
        let withhold = Masker::of_sets([SecretSet::new(["a"]), SecretSet(SetKind::Withhold)]);
        assert_eq!(mask_with(withhold, &[b"anything"]), MASK);
    }

    /// Naive reference: at each position take the longest secret that starts there.
    fn reference(secrets: &[Vec<u8>], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            let best = secrets.iter().filter(|s| !s.is_empty() && data[i..].starts_with(s)).map(Vec::len).max();
            match best {
                Some(len) => {
                    out.extend_from_slice(MASK);
                    i += len;
                }
                None => {
                    out.push(data[i]);
                    i += 1;
                }
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn chunking_never_changes_the_output(
            secrets in prop::collection::vec(prop::collection::vec(b'a'..=b'd', 0..7), 0..5),
            noise in prop::collection::vec(b'a'..=b'e', 0..200),
            inserts in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            // Plant secrets in the noise so that matches are common.
            let mut data = noise;
            for (secret, at) in &inserts {
                if secrets.is_empty() { break; }
                let s = secret.get(&secrets);
                let at = at.index(data.len() + 1);
                data.splice(at..at, s.iter().copied());
            }
            let whole = Masker::mask_all(&secrets, &data);
            prop_assert_eq!(&whole, &reference(&secrets, &data));

            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            cuts.sort_unstable();
            let mut m = Masker::new(&secrets);
            let mut out = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                m.push(&data[from..cut], &mut out);
                let longest = secrets.iter().map(Vec::len).max().unwrap_or(0);
                prop_assert!(m.pending() < longest.max(1));
                from = cut;
            }
            m.finish(&mut out);
            prop_assert_eq!(&out, &whole);
            for s in &secrets {
                prop_assert!(!contains(&out, s), "secret {:?} leaked in {:?}", s, out);
            }
        }

        #[test]
        fn sets_masked_together_equal_one_set(
            secrets in prop::collection::vec(prop::collection::vec(b'a'..=b'd', 1..7), 1..6),
            split in any::<prop::sample::Index>(),
            data in prop::collection::vec(b'a'..=b'e', 0..200),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let at = split.index(secrets.len() + 1);
            let (shared, own) = secrets.split_at(at);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            cuts.sort_unstable();
            let mut m = Masker::of_sets([SecretSet::new(shared), SecretSet::for_one_log(own)]);
            let mut out = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([data.len()]) {
                m.push(&data[from..cut], &mut out);
                from = cut;
            }
            m.finish(&mut out);
            prop_assert_eq!(out, reference(&secrets, &data));
        }

        #[test]
        fn one_byte_chunks_equal_whole(
            secrets in prop::collection::vec(prop::collection::vec(b'x'..=b'z', 1..9), 1..4),
            data in prop::collection::vec(b'x'..=b'z', 0..120),
        ) {
            let mut m = Masker::new(&secrets);
            let mut out = Vec::new();
            for b in &data {
                m.push(std::slice::from_ref(b), &mut out);
            }
            m.finish(&mut out);
            prop_assert_eq!(out, Masker::mask_all(&secrets, &data));
        }
    }
}
