/// Cuts generated text at the first stop string, without ever emitting any part of it.
///
/// Text that could be the start of a stop string is held back until the next piece decides:
/// either the stop string completes (generation ends, the held text is dropped) or it
/// cannot (the held text is released).
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
    matched: Option<String>,
}

/// The result of feeding one piece of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopStep {
    /// Text that is safe to emit now.
    pub emit: String,
    /// A stop string matched: emit `emit`, then end generation.
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), ..Self::default() }
    }

    pub fn push(&mut self, text: &str) -> StopStep {
        if self.stopped {
            return StopStep { emit: String::new(), stopped: true };
        }
        if self.stops.is_empty() {
            return StopStep { emit: text.to_string(), stopped: false };
        }
        self.held.push_str(text);
        // The earliest complete match wins.
        if let Some((pos, stop)) =
            self.stops.iter().filter_map(|s| self.held.find(s.as_str()).map(|p| (p, s))).min_by_key(|(p, _)| *p)
        {
            self.matched = Some(stop.clone());
            let emit = self.held[..pos].to_string();
            self.held.clear();
            self.stopped = true;
            return StopStep { emit, stopped: true };
        }
        // Hold back the longest tail that is a prefix of some stop string.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let emit = self.held[..keep].to_string();
        self.held.drain(..keep);
        StopStep { emit, stopped: false }
    }

    /// The stop string that matched, once one did.
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    /// Generation ended for another reason: whatever was held back is plain text after all.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let step = m.push(p);
            out.push_str(&step.emit);
            if step.stopped {
                return (out, true);
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn no_stops_passes_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn stop_inside_one_piece() {
        assert_eq!(run(&["\n\n"], &["Hello.\n\nBye"]), ("Hello.".into(), true));
    }

    #[test]
    fn stop_split_across_pieces_is_never_emitted() {
        assert_eq!(run(&["</end>"], &["one </", "en", "d> two"]), ("one ".into(), true));
    }

    #[test]
    fn partial_match_is_released_when_it_fails() {
        assert_eq!(run(&["STOP"], &["ST", "AR", "T"]), ("START".into(), false));
        assert_eq!(run(&["STOP"], &["go ST"]), ("go ST".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["b", "a"], &["xxaxb"]), ("xx".into(), true));
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        assert_eq!(run(&["🦙!"], &["é🦙", "?é🦙", "!z"]), ("é🦙?é".into(), true));
    }

    #[test]
    fn held_text_is_emitted_in_order() {
        let stops = vec!["abc".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("xab").emit, "x");
        assert_eq!(m.push("x").emit, "abx");
    }
}
