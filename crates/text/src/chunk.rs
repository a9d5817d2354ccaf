//! Splitting a document's extracted text into chunks, the passages the
//! search index stores and a question's answer cites.
//!
//! Chunks hold at most `target_chars` chars (chars, not bytes: a chunk never
//! splits a UTF-8 char). Each cut is placed as late as possible in the window
//! of the next `target_chars` chars, preferring, in order: a paragraph break
//! (a blank line), a sentence end, any whitespace, and only when the window
//! has none of them past its first half, a hard cut. So small paragraphs are
//! merged into one chunk and chunks rarely end mid-sentence. Whitespace
//! around a cut belongs to no chunk; everything else is in exactly one chunk,
//! in order.

use serde::{Deserialize, Serialize};

/// About how many chars a chunk holds: a few paragraphs, small enough for a
/// citation to point at the relevant part of a document, large enough to
/// keep a sentence's context.
pub const DEFAULT_CHUNK_CHARS: usize = 800;

/// One passage of a document's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// 0-based index of the chunk in its document.
    pub position: u32,
    /// Char offset (not byte offset) of the chunk's first char in the text.
    pub start: usize,
    /// The chunk's text: starts and ends with a non-whitespace char.
    pub text: String,
}

/// Splits `text` into chunks of at most `target_chars` chars (a target of 0
/// is taken as 1), cut at paragraph, then sentence, then word boundaries.
/// Whitespace-only text has no chunks.
pub fn chunk_text(text: &str, target_chars: usize) -> Vec<Chunk> {
    let target = target_chars.max(1);
    let chars: Vec<char> = text.chars().collect();
    let paragraph_breaks = paragraph_breaks(&chars);
    // The end of the last non-whitespace char: trailing whitespace is in no
    // chunk.
    let end = chars
        .iter()
        .rposition(|c| !c.is_whitespace())
        .map_or(0, |last| last + 1);

    let mut chunks = Vec::new();
    let mut cursor = skip_whitespace(&chars, 0, end);
    while cursor < end {
        let cut = if end - cursor <= target {
            end
        } else {
            find_cut(&chars, &paragraph_breaks, cursor, target)
        };
        let chunk_end = trim_end(&chars, cursor, cut);
        chunks.push(Chunk {
            position: u32::try_from(chunks.len()).unwrap_or(u32::MAX),
            start: cursor,
            text: chars[cursor..chunk_end].iter().collect(),
        });
        cursor = skip_whitespace(&chars, cut, end);
    }
    chunks
}

/// Where to end the chunk starting at `cursor` (exclusive index), given more
/// than `target` chars remain. The chunk is `chars[cursor..cut]`, so `cut`
/// lies in `cursor + 1 ..= cursor + target`; only cuts in the window's later
/// half count as boundaries, so chunks do not come out tiny.
fn find_cut(chars: &[char], paragraph_breaks: &[bool], cursor: usize, target: usize) -> usize {
    let latest = cursor + target;
    let earliest = cursor + (target / 2).max(1);
    let last_in_window = |is_boundary: &dyn Fn(usize) -> bool| {
        (earliest..=latest).rev().find(|&cut| is_boundary(cut))
    };
    last_in_window(&|cut| paragraph_breaks[cut])
        .or_else(|| last_in_window(&|cut| is_sentence_end(chars, cut)))
        .or_else(|| last_in_window(&|cut| chars[cut].is_whitespace()))
        .unwrap_or(latest)
}

/// For each index: whether a cut there falls on a paragraph break, i.e. the
/// char is a line feed followed, after only whitespace, by another one.
/// One backward pass, so long whitespace runs cost nothing extra.
fn paragraph_breaks(chars: &[char]) -> Vec<bool> {
    let mut breaks = vec![false; chars.len()];
    let mut line_feed_ahead = false;
    for (index, &c) in chars.iter().enumerate().rev() {
        if c == '\n' {
            breaks[index] = line_feed_ahead;
            line_feed_ahead = true;
        } else if !c.is_whitespace() {
            line_feed_ahead = false;
        }
    }
    breaks
}

/// Whether `chars[..cut]` ends a sentence: `.`, `!` or `?` (possibly
/// followed by closing quotes or brackets) then whitespace, or a CJK full
/// stop, which needs no space after it.
fn is_sentence_end(chars: &[char], cut: usize) -> bool {
    let Some(&before) = cut.checked_sub(1).and_then(|index| chars.get(index)) else {
        return false;
    };
    if matches!(before, '。' | '！' | '？') {
        return true;
    }
    if !chars.get(cut).is_some_and(|c| c.is_whitespace()) {
        return false;
    }
    chars[..cut]
        .iter()
        .rev()
        .find(|c| !matches!(c, '"' | '\'' | ')' | ']' | '”' | '’' | '»'))
        .is_some_and(|&c| matches!(c, '.' | '!' | '?' | '…'))
}

fn skip_whitespace(chars: &[char], from: usize, end: usize) -> usize {
    (from..end)
        .find(|&index| !chars[index].is_whitespace())
        .unwrap_or(end)
}

fn trim_end(chars: &[char], start: usize, end: usize) -> usize {
    (start..end)
        .rev()
        .find(|&index| !chars[index].is_whitespace())
        .map_or(start, |last| last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use echo_testkit::Xorshift;

    fn texts(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().map(|chunk| chunk.text.as_str()).collect()
    }

    #[test]
    fn whitespace_only_text_has_no_chunks() {
        for text in ["", " ", "\n\n\t ", "\u{3000}\u{a0}"] {
            assert!(chunk_text(text, 10).is_empty(), "{text:?}");
        }
    }

    #[test]
    fn short_text_is_one_trimmed_chunk() {
        let chunks = chunk_text("\n  Hello, world.  \n", 800);
        assert_eq!(
            chunks,
            vec![Chunk {
                position: 0,
                start: 3,
                text: "Hello, world.".to_owned()
            }]
        );
    }

    #[test]
    fn prefers_paragraph_breaks_and_merges_small_paragraphs() {
        let text = "First para one.\n\nSecond para two.\n\nThird para three here.";
        // 50 chars fit the first two paragraphs, not the third.
        let chunks = chunk_text(text, 40);
        assert_eq!(
            texts(&chunks),
            [
                "First para one.\n\nSecond para two.",
                "Third para three here."
            ]
        );
        assert_eq!(chunks[1].start, 35);
    }

    #[test]
    fn then_sentence_ends() {
        let text = "Alpha beta gamma delta. Epsilon zeta eta theta iota";
        let chunks = chunk_text(text, 40);
        assert_eq!(
            texts(&chunks),
            ["Alpha beta gamma delta.", "Epsilon zeta eta theta iota"]
        );
    }

    #[test]
    fn sentence_end_after_closing_quote() {
        let chunks = chunk_text("He said \"stop.\" Then we left the place", 25);
        assert_eq!(
            texts(&chunks),
            ["He said \"stop.\"", "Then we left the place"]
        );
    }

    #[test]
    fn then_whitespace_then_hard_cut() {
        let chunks = chunk_text("alpha beta gamma delta epsilon", 12);
        assert_eq!(texts(&chunks), ["alpha beta", "gamma delta", "epsilon"]);

        let chunks = chunk_text("abcdefghijklmnopqrstuvwxyz", 10);
        assert_eq!(texts(&chunks), ["abcdefghij", "klmnopqrst", "uvwxyz"]);
        assert_eq!(chunks[2].start, 20);
    }

    #[test]
    fn never_splits_a_multibyte_char_and_counts_chars() {
        let text = "日本語のテキスト。次の文です。🦀🦀🦀🦀🦀🦀 éàü";
        let chunks = chunk_text(text, 7);
        for chunk in &chunks {
            assert!(chunk.text.chars().count() <= 7, "{chunk:?}");
        }
        assert_eq!(chunks[0].text, "日本語のテキス");
        let all: Vec<char> = text.chars().collect();
        for chunk in &chunks {
            let expected: String = all[chunk.start..chunk.start + chunk.text.chars().count()]
                .iter()
                .collect();
            assert_eq!(chunk.text, expected);
        }
    }

    #[test]
    fn default_size_on_a_long_document() {
        let paragraph = "The parser extracts text from documents. It supports PDF, DOCX and HTML. \
                         Chunks are indexed for search.\n\n";
        let text = paragraph.repeat(100);
        let chunks = chunk_text(&text, DEFAULT_CHUNK_CHARS);
        assert!(chunks.len() > 5);
        for chunk in &chunks {
            let length = chunk.text.chars().count();
            assert!(length <= DEFAULT_CHUNK_CHARS);
            assert!(chunk.text.ends_with("search."), "{:?}", chunk.text);
        }
    }

    fn generated_text(random: &mut Xorshift) -> String {
        const PIECES: &[&str] = &[
            "word",
            "a",
            "parser",
            "é",
            "日本",
            "🦀",
            "ﬁ",
            "x",
            "longwordwithoutanyspaces",
            " ",
            " ",
            " ",
            "  ",
            "\n",
            "\n\n",
            "\r\n",
            "\t",
            ". ",
            "! ",
            "? ",
            "。",
            ".\" ",
            "\u{a0}",
            "\u{2003}",
            ",",
            "-",
        ];
        let pieces = random.below(120);
        (0..pieces)
            .map(|_| PIECES[random.below(PIECES.len())])
            .collect()
    }

    #[test]
    fn property_chunks_cover_the_text_in_order_within_the_bound() {
        let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
        for case in 0..3_000 {
            let text = generated_text(&mut random);
            let target = 1 + random.below(60);
            let chunks = chunk_text(&text, target);
            let all: Vec<char> = text.chars().collect();

            let mut previous_end = 0;
            for (index, chunk) in chunks.iter().enumerate() {
                let length = chunk.text.chars().count();
                assert_eq!(chunk.position as usize, index, "case {case}");
                assert!(length >= 1 && length <= target, "case {case}: {chunk:?}");
                assert!(!chunk.text.starts_with(char::is_whitespace), "case {case}");
                assert!(!chunk.text.ends_with(char::is_whitespace), "case {case}");
                assert!(chunk.start >= previous_end, "case {case}: overlap");
                // Cut on char boundaries of the very text, at `start`.
                let at_start: String = all[chunk.start..chunk.start + length].iter().collect();
                assert_eq!(at_start, chunk.text, "case {case}");
                // Only whitespace between chunks.
                assert!(
                    all[previous_end..chunk.start]
                        .iter()
                        .all(|c| c.is_whitespace()),
                    "case {case}: text lost before {chunk:?}"
                );
                previous_end = chunk.start + length;
            }
            assert!(
                all[previous_end..].iter().all(|c| c.is_whitespace()),
                "case {case}: text lost at the end"
            );

            let non_whitespace =
                |s: &str| -> String { s.chars().filter(|c| !c.is_whitespace()).collect() };
            let covered: String = chunks
                .iter()
                .map(|chunk| non_whitespace(&chunk.text))
                .collect();
            assert_eq!(covered, non_whitespace(&text), "case {case}");
        }
    }
}
