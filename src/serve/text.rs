//! Generated tokens as text, piece by piece: each piece is only sent once it can no longer
//! change (no unfinished character at its end) and cannot be the start of a stop string, and
//! the text ends where a stop string first appears.

use std::sync::Arc;

use tokenizers::Tokenizer;

pub struct TextStream {
    tokenizer: Arc<Tokenizer>,
    ids: Vec<u32>,
    stops: Vec<String>,
    /// The decoded text, cut before the first stop string.
    text: String,
    stopped: bool,
    /// Bytes of `text` already handed out.
    sent: usize,
}

impl TextStream {
    pub fn new(tokenizer: Arc<Tokenizer>, stops: Vec<String>) -> TextStream {
        TextStream {
            tokenizer,
            ids: Vec::new(),
            stops,
            text: String::new(),
            stopped: false,
            sent: 0,
        }
    }

    pub fn push(&mut self, id: u32) {
        if self.stopped {
            return;
        }
        self.ids.push(id);
        let mut text = self.tokenizer.decode(&self.ids, true).unwrap_or_default();
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(at);
            self.stopped = true;
        }
        self.text = text;
    }

    /// A stop string has appeared.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The text that is settled and not yet handed out.
    pub fn ready(&mut self) -> String {
        let mut end = self.text.len();
        if self.text.ends_with('\u{FFFD}') {
            end -= '\u{FFFD}'.len_utf8();
        }
        // Hold back a tail that could still grow into a stop string.
        let hold = self
            .stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(move |&k| s.is_char_boundary(k))
                    .map(move |k| &s[..k])
            })
            .filter(|prefix| self.text[..end].ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        end -= hold;
        self.take_until(end)
    }

    /// Everything not yet handed out: the end of the stream.
    pub fn finish_delta(&mut self) -> String {
        self.take_until(self.text.len())
    }

    /// The whole text.
    pub fn finish(self) -> String {
        self.text
    }

    fn take_until(&mut self, end: usize) -> String {
        match self.text.get(self.sent..end) {
            Some(piece) if end > self.sent => {
                let piece = piece.to_string();
                self.sent = end;
                piece
            }
            _ => String::new(),
        }
    }
}
