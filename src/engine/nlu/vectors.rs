//! English word-piece vectors: a dense meaning feature beside the hashed n-grams.
//!
//! Hashed n-grams only know the words a bot's author wrote; a user who says "purchase" to a
//! bot taught "buy" shares no n-gram with it. The table here gives every English word piece of
//! an uncased BERT vocabulary a 128-dimension vector in which pieces of alike meaning lie close
//! ("buy", "purchase", "bought"). A text's vector is the normalised mean of its pieces.
//!
//! The table is distilled from all-MiniLM-L6-v2 (Apache-2.0) by
//! `bench/word-vectors/distill.py` and compiled into the binary (`english.vec`, ~4 MB, read in
//! place: pages never touched stay on disk). Text is split the way that model's tokenizer
//! does it: BERT's uncased basic tokenizer, then greedy longest-match WordPiece.

use std::sync::OnceLock;

const MAGIC: &[u8; 8] = b"BOTDWV1\0";
/// BERT's limit: a longer "word" is unknown as a whole.
const MAX_WORD_CHARS: usize = 100;

static ENGLISH_BYTES: &[u8] = include_bytes!("english.vec");

/// A word-piece table read in place from its bytes (format in `distill.py`).
#[derive(Debug)]
pub struct WordVectors {
    bytes: &'static [u8],
    pieces: usize,
    dims: usize,
    scale: Vec<f32>,
    offsets_at: usize,
    blob_at: usize,
    rows_at: usize,
    /// Bytes of the longest piece: no longer candidate is ever looked up.
    longest_piece: usize,
}

/// The table compiled into botd, parsed once; `None` (logged once) if it is damaged.
pub fn english() -> Option<&'static WordVectors> {
    static TABLE: OnceLock<Option<WordVectors>> = OnceLock::new();
    TABLE
        .get_or_init(|| match WordVectors::parse(ENGLISH_BYTES) {
            Ok(t) => Some(t),
            Err(e) => {
                log::error!("nlu: the built-in English word vectors are unusable: {e}");
                None
            }
        })
        .as_ref()
}

/// Unmaps the built-in table's pages from this process after a training that read many of
/// them (every piece of every utterance, synthetic noise included). They are clean pages of
/// the binary: the kernel keeps them in its page cache while memory allows, and a prediction
/// maps back the few rows it reads. Without this, an idle botd keeps ~2.7 MB of the table
/// resident that only training needed.
pub fn release_pages() {
    let start = ENGLISH_BYTES.as_ptr() as usize;
    let end = start + ENGLISH_BYTES.len();
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as usize,
        _ => return,
    };
    // Only whole pages inside the table: its bytes are never written, so dropping the
    // process's mapping of them loses nothing; the next read maps the file's bytes again.
    let first = start.div_ceil(page) * page;
    let last = end / page * page;
    if last > first {
        // SAFETY: the range lies inside a read-only static; MADV_DONTNEED on a private file
        // mapping never written to only drops page-table entries.
        let rc = unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            log::debug!("nlu: madvise on the word-vector table failed");
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl WordVectors {
    /// Checks the header and every offset so that lookups later need no checks that can fail.
    pub fn parse(bytes: &'static [u8]) -> Result<WordVectors, String> {
        if bytes.get(..8) != Some(MAGIC) {
            return Err("not a botd word-vector table (bad magic)".into());
        }
        let header = |at| u32_at(bytes, at).ok_or("truncated header");
        let pieces = header(8)? as usize;
        let dims = header(12)? as usize;
        if pieces == 0 || dims == 0 || dims > 4096 {
            return Err(format!("implausible size: {pieces} pieces × {dims} dims"));
        }
        let scale: Vec<f32> = (0..dims)
            .map(|d| u32_at(bytes, 16 + 4 * d).map(f32::from_bits))
            .collect::<Option<_>>()
            .ok_or("truncated scales")?;
        if scale.iter().any(|s| !s.is_finite()) {
            return Err("a scale is not a finite number".into());
        }
        let offsets_at = 16 + 4 * dims;
        let blob_at = offsets_at + 4 * (pieces + 1);
        let mut prev = 0u32;
        let mut longest_piece = 0;
        for i in 0..=pieces {
            let o = u32_at(bytes, offsets_at + 4 * i).ok_or("truncated offsets")?;
            if o < prev || (i == 0 && o != 0) {
                return Err(format!("offset {i} goes backwards"));
            }
            longest_piece = longest_piece.max((o - prev) as usize);
            prev = o;
        }
        let rows_at = blob_at + prev as usize;
        if bytes.len() != rows_at + pieces * dims {
            return Err(format!(
                "size is {} bytes where the header says {}",
                bytes.len(),
                rows_at + pieces * dims
            ));
        }
        let table = WordVectors {
            bytes,
            pieces,
            dims,
            scale,
            offsets_at,
            blob_at,
            rows_at,
            longest_piece,
        };
        if (1..pieces).any(|i| table.piece(i - 1) >= table.piece(i)) {
            return Err("pieces are not sorted and distinct".into());
        }
        Ok(table)
    }

    fn offset(&self, i: usize) -> usize {
        // Checked in `parse`.
        u32_at(self.bytes, self.offsets_at + 4 * i).unwrap_or(0) as usize
    }

    fn piece(&self, i: usize) -> &[u8] {
        &self.bytes[self.blob_at + self.offset(i)..self.blob_at + self.offset(i + 1)]
    }

    /// The row of a piece (`##` marks a continuation), by binary search of the sorted blob.
    fn find(&self, piece: &[u8]) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.pieces);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.piece(mid).cmp(piece) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Greedy longest-match-first WordPiece of one basic token: its rows are pushed onto `out`
    /// and `true` returned; `false` (and nothing pushed) when some part of it matches no piece,
    /// as BERT then calls the whole word unknown.
    fn word_rows(&self, word: &str, key: &mut Vec<u8>, out: &mut Vec<usize>) -> bool {
        if word.chars().count() > MAX_WORD_CHARS {
            return false;
        }
        let start_len = out.len();
        let mut start = 0;
        while start < word.len() {
            let prefix: &[u8] = if start == 0 { b"" } else { b"##" };
            let room = self.longest_piece.saturating_sub(prefix.len());
            // Candidate ends, longest first, on character boundaries.
            let mut end = (start + room).min(word.len());
            let found = loop {
                while end > start && !word.is_char_boundary(end) {
                    end -= 1;
                }
                if end <= start {
                    break None;
                }
                key.clear();
                key.extend_from_slice(prefix);
                key.extend_from_slice(&word.as_bytes()[start..end]);
                if let Some(row) = self.find(key) {
                    break Some((row, end));
                }
                end -= 1;
            };
            match found {
                Some((row, next)) => {
                    out.push(row);
                    start = next;
                }
                None => {
                    out.truncate(start_len);
                    return false;
                }
            }
        }
        true
    }

    /// The rows of a text's pieces, in order, as the model's tokenizer gives them (unknown
    /// words left out).
    pub fn piece_rows(&self, text: &str) -> Vec<u32> {
        let mut rows = Vec::new();
        let mut key = Vec::new();
        for w in basic_tokens(text) {
            self.word_rows(&w, &mut key, &mut rows);
        }
        rows.into_iter().map(|r| r as u32).collect()
    }

    /// The pieces of a text, as the model's tokenizer gives them (unknown words left out).
    pub fn word_pieces(&self, text: &str) -> Vec<String> {
        self.piece_rows(text)
            .into_iter()
            .map(|r| String::from_utf8_lossy(self.piece(r as usize)).into_owned())
            .collect()
    }

    /// The unit-length mean vector of a text's known pieces; `None` when it has none.
    ///
    /// Every piece weighs the same: weighing them by their IDF in the bot's training texts
    /// was tried and lost on CLINC150 val (0.950 → 0.946 in-scope accuracy).
    pub fn sentence(&self, text: &str) -> Option<Vec<f32>> {
        let rows = self.piece_rows(text);
        if rows.is_empty() {
            return None;
        }
        let mut sum = vec![0f32; self.dims];
        for r in rows {
            let at = self.rows_at + r as usize * self.dims;
            for (s, &q) in sum.iter_mut().zip(&self.bytes[at..at + self.dims]) {
                *s += q as i8 as f32;
            }
        }
        for (s, k) in sum.iter_mut().zip(&self.scale) {
            *s *= k;
        }
        let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm == 0.0 {
            return None;
        }
        for s in sum.iter_mut() {
            *s /= norm;
        }
        Some(sum)
    }
}

/// BERT's uncased basic tokenizer: control characters dropped, lower case, accents removed,
/// split on whitespace and around every punctuation character.
fn basic_tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_whitespace() {
            flush(&mut word, &mut out);
        } else if c.is_control() || c == '\u{fffd}' || is_combining_mark(c) {
            continue;
        } else if is_punctuation(c) {
            flush(&mut word, &mut out);
            out.push(c.to_string());
        } else {
            word.push(fold_accent(c));
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Combining diacritical marks (what NFD leaves of an accent).
fn is_combining_mark(c: char) -> bool {
    matches!(c, '\u{300}'..='\u{36f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}')
}

/// BERT's test: ASCII non-alphanumeric symbols, and Unicode punctuation (the General
/// Punctuation block and Latin-1's punctuation marks).
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            c,
            '¡' | '§' | '«' | '¶' | '·' | '»' | '¿' | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205e}'
        )
}

/// Lower-case Latin letters with an accent, to the letter NFD plus accent stripping leaves.
/// Letters that do not decompose (æ, ø, ß, ł, đ, …) stay themselves, as in BERT.
fn fold_accent(c: char) -> char {
    match c {
        'à'..='å' | 'ā' | 'ă' | 'ą' | 'ǎ' => 'a',
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => 'c',
        'ď' => 'd',
        'è'..='ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => 'e',
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => 'g',
        'ĥ' => 'h',
        'ì'..='ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ǐ' => 'i',
        'ĵ' => 'j',
        'ķ' => 'k',
        'ĺ' | 'ļ' | 'ľ' => 'l',
        'ñ' | 'ń' | 'ņ' | 'ň' => 'n',
        'ò'..='ö' | 'ō' | 'ŏ' | 'ő' | 'ǒ' => 'o',
        'ŕ' | 'ŗ' | 'ř' => 'r',
        'ś' | 'ŝ' | 'ş' | 'š' | 'ș' => 's',
        'ţ' | 'ť' | 'ț' => 't',
        'ù'..='ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' | 'ǔ' => 'u',
        'ŵ' => 'w',
        'ý' | 'ÿ' | 'ŷ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> &'static WordVectors {
        english().expect("the built-in table parses")
    }

    /// Expected pieces are what the model's own tokenizer (Hugging Face `tokenizers` with the
    /// model's tokenizer.json) gives for these texts.
    #[test]
    fn pieces_match_the_models_tokenizer() {
        let cases: &[(&str, &[&str])] = &[
            (
                "I want to BUY a car!",
                &["i", "want", "to", "buy", "a", "car", "!"],
            ),
            (
                "Où est la gare? Crème brûlée, naïve café",
                &[
                    "ou", "est", "la", "ga", "##re", "?", "cr", "##eme", "br", "##ule", "##e", ",",
                    "naive", "cafe",
                ],
            ),
            (
                "don't stop-me now...unbelievably",
                &[
                    "don", "'", "t", "stop", "-", "me", "now", ".", ".", ".", "un", "##bel",
                    "##ie", "##va", "##bly",
                ],
            ),
            (
                "transferring 300$ to my account#42 qwzxqj",
                &[
                    "transferring",
                    "300",
                    "$",
                    "to",
                    "my",
                    "account",
                    "#",
                    "42",
                    "q",
                    "##w",
                    "##z",
                    "##x",
                    "##q",
                    "##j",
                ],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(table().word_pieces(text), *want, "{text}");
        }
    }

    #[test]
    fn text_without_known_pieces_has_no_vector() {
        assert!(table().sentence("").is_none());
        assert!(table().sentence("死 亡").is_none());
        assert_eq!(
            table().word_pieces(&"a".repeat(MAX_WORD_CHARS + 1)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn alike_meanings_are_closer() {
        let t = table();
        let v = |s| t.sentence(s).unwrap();
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let buy = v("i want to buy a car");
        let norm = dot(&buy, &buy);
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        let purchase = dot(&buy, &v("purchase an automobile"));
        let weather = dot(&buy, &v("will it rain in paris tomorrow"));
        assert!(purchase > weather + 0.1, "{purchase} vs {weather}");
    }

    #[test]
    fn damaged_tables_are_refused() {
        assert!(WordVectors::parse(b"nope").is_err());
        let truncated: &'static [u8] = &ENGLISH_BYTES[..ENGLISH_BYTES.len() - 1];
        assert!(WordVectors::parse(truncated).unwrap_err().contains("size"));
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&[0; 8]);
        let header: &'static [u8] = header.leak();
        assert!(WordVectors::parse(header).is_err());
    }
}
