//! The output text, capped at a number of characters.

/// Text under construction. Pushes past `max` characters are cut at the
/// limit and mark it truncated; formats stop reading once [`Text::is_full`].
#[derive(Debug)]
pub struct Text {
    buf: String,
    chars: usize,
    max: usize,
    truncated: bool,
}

impl Text {
    pub fn new(max: usize) -> Self {
        Self {
            buf: String::new(),
            chars: 0,
            max,
            truncated: false,
        }
    }

    /// Appends `s`, or as much of it as fits.
    pub fn push(&mut self, s: &str) {
        if self.truncated {
            return;
        }
        let room = self.max - self.chars;
        match s.char_indices().nth(room) {
            None => {
                self.chars += s.chars().count();
                self.buf.push_str(s);
            }
            Some((cut, _)) => {
                self.buf.push_str(&s[..cut]);
                self.chars = self.max;
                self.truncated = true;
            }
        }
    }

    /// Ends the current line, unless the text is empty or already ends one.
    pub fn newline(&mut self) {
        if !self.buf.is_empty() && !self.buf.ends_with('\n') {
            self.push("\n");
        }
    }

    /// Marks the text truncated without a push (input left unread).
    pub fn truncate(&mut self) {
        self.truncated = true;
    }

    pub fn is_full(&self) -> bool {
        self.truncated
    }

    /// The text, whether it was cut, and its length in characters.
    pub fn finish(self) -> (String, bool, usize) {
        (self.buf, self.truncated, self.chars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stops_at_the_character_limit() {
        let mut text = Text::new(5);
        text.push("héllo");
        assert!(!text.is_full());
        text.push("!");
        assert!(text.is_full());
        assert_eq!(text.finish(), ("héllo".to_owned(), true, 5));

        let mut text = Text::new(3);
        text.push("añbc");
        assert_eq!(text.finish(), ("añb".to_owned(), true, 3));
    }

    #[test]
    fn newline_never_doubles() {
        let mut text = Text::new(100);
        text.newline();
        text.push("a");
        text.newline();
        text.newline();
        assert_eq!(text.finish().0, "a\n");
    }
}
