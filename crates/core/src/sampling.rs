use crate::ValidationError;

/// How the next token is chosen from the logits.
///
/// An enum rather than a bag of options, so that contradictory settings (a temperature of
/// zero together with top-p, say) cannot be written: greedy decoding has no knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Always the most likely token. Deterministic.
    Greedy,
    /// Sample from the distribution after truncation (top-k, then top-p, then min-p) and
    /// temperature scaling. `None` means that filter is off.
    Random { temperature: f32, top_k: Option<u32>, top_p: Option<f32>, min_p: Option<f32> },
}

impl Sampling {
    /// Builds sampling from the loose knobs every API exposes, validating each one.
    /// A temperature of 0 means greedy, as in Ollama, llama.cpp and OpenAI.
    pub fn from_knobs(
        temperature: Option<f32>,
        top_k: Option<i64>,
        top_p: Option<f32>,
        min_p: Option<f32>,
    ) -> Result<Self, ValidationError> {
        let temperature = temperature.unwrap_or(Self::DEFAULT_TEMPERATURE);
        check_range("temperature", temperature, 0.0, 100.0, "between 0 and 100")?;
        if let Some(p) = top_p {
            check_range("top_p", p, 0.0, 1.0, "between 0 and 1")?;
        }
        if let Some(p) = min_p {
            check_range("min_p", p, 0.0, 1.0, "between 0 and 1")?;
        }
        let top_k = match top_k {
            // 0 (Ollama, llama.cpp) and -1 (vLLM) both mean "the whole vocabulary".
            None | Some(0) | Some(-1) => None,
            Some(k) if k < 0 => {
                return Err(ValidationError::OutOfRange {
                    field: "top_k",
                    expected: ">= 0 (0 or -1: the whole vocabulary)",
                    got: k.to_string(),
                })
            }
            Some(k) => Some(u32::try_from(k).unwrap_or(u32::MAX)),
        };
        if temperature == 0.0 || top_k == Some(1) {
            return Ok(Sampling::Greedy);
        }
        Ok(Sampling::Random {
            temperature,
            top_k,
            top_p: top_p.filter(|p| *p < 1.0),
            min_p: min_p.filter(|p| *p > 0.0),
        })
    }

    /// Ollama's and llama.cpp's default.
    pub const DEFAULT_TEMPERATURE: f32 = 0.8;
    /// The candidates kept when a request does not say (`top_k`), as llama-server and Ollama
    /// do: without it, top-p sorts the whole vocabulary for every token (0.5-2.4 ms per token
    /// per sequence on a 49k vocabulary, measured), with it the cost is microseconds.
    pub const DEFAULT_TOP_K: i64 = 40;
    /// Ollama's default `top_p`.
    pub const DEFAULT_TOP_P: f32 = 0.9;
}

/// Penalties against repeating tokens, applied over the last `last_n` tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalties {
    /// Multiplicative penalty (1.0 = off), llama.cpp's `repeat_penalty`.
    pub repeat: f32,
    /// Subtracted once from a token that appeared at all (0.0 = off), OpenAI's `presence_penalty`.
    pub presence: f32,
    /// Subtracted per occurrence (0.0 = off), OpenAI's `frequency_penalty`.
    pub frequency: f32,
    /// How many recent tokens count; 0 turns the penalties off.
    pub last_n: u32,
}

impl Default for Penalties {
    fn default() -> Self {
        Self { repeat: 1.0, presence: 0.0, frequency: 0.0, last_n: 64 }
    }
}

impl Penalties {
    pub fn new(
        repeat: Option<f32>,
        presence: Option<f32>,
        frequency: Option<f32>,
        last_n: Option<i64>,
    ) -> Result<Self, ValidationError> {
        let d = Self::default();
        let repeat = repeat.unwrap_or(d.repeat);
        check_range("repeat_penalty", repeat, 0.0, 10.0, "between 0 and 10")?;
        if repeat == 0.0 {
            return Err(ValidationError::OutOfRange {
                field: "repeat_penalty",
                expected: "greater than 0",
                got: "0".into(),
            });
        }
        let presence = presence.unwrap_or(d.presence);
        check_range("presence_penalty", presence, -2.0, 2.0, "between -2 and 2")?;
        let frequency = frequency.unwrap_or(d.frequency);
        check_range("frequency_penalty", frequency, -2.0, 2.0, "between -2 and 2")?;
        let last_n = match last_n {
            None => d.last_n,
            Some(n) if n < -1 => {
                return Err(ValidationError::OutOfRange {
                    field: "repeat_last_n",
                    expected: ">= -1",
                    got: n.to_string(),
                })
            }
            // -1 means "the whole context" in Ollama and llama.cpp.
            Some(-1) => u32::MAX,
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
        };
        Ok(Self { repeat, presence, frequency, last_n })
    }

    pub fn is_off(&self) -> bool {
        self.last_n == 0 || (self.repeat == 1.0 && self.presence == 0.0 && self.frequency == 0.0)
    }
}

/// Everything that decides which tokens come out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub sampling: Sampling,
    pub penalties: Penalties,
    /// Same seed + same prompt + same model = same output. `None` draws a random seed.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            sampling: Sampling::Random {
                temperature: Sampling::DEFAULT_TEMPERATURE,
                top_k: Some(40),
                top_p: Some(0.9),
                min_p: None,
            },
            penalties: Penalties::default(),
            seed: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self { sampling: Sampling::Greedy, penalties: Penalties::default(), seed: None }
    }
}

fn check_range(field: &'static str, v: f32, lo: f32, hi: f32, expected: &'static str) -> Result<(), ValidationError> {
    // NaN fails both comparisons, so it is rejected here too.
    if v >= lo && v <= hi {
        Ok(())
    } else {
        Err(ValidationError::OutOfRange { field, expected, got: v.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_temperature_is_greedy() {
        assert_eq!(Sampling::from_knobs(Some(0.0), Some(40), Some(0.9), None), Ok(Sampling::Greedy));
        assert_eq!(Sampling::from_knobs(Some(0.7), Some(1), None, None), Ok(Sampling::Greedy));
    }

    #[test]
    fn random_keeps_active_filters_only() {
        let s = Sampling::from_knobs(Some(0.7), Some(0), Some(1.0), Some(0.05)).expect("valid");
        assert_eq!(s, Sampling::Random { temperature: 0.7, top_k: None, top_p: None, min_p: Some(0.05) });
    }

    #[test]
    fn rejects_out_of_range_and_nan() {
        let e = Sampling::from_knobs(Some(-1.0), None, None, None).unwrap_err();
        assert!(e.to_string().contains("temperature"), "{e}");
        assert!(Sampling::from_knobs(Some(f32::NAN), None, None, None).is_err());
        assert!(Sampling::from_knobs(None, None, Some(1.5), None).is_err());
        assert!(Sampling::from_knobs(None, Some(-3), None, None).is_err());
        assert!(matches!(Sampling::from_knobs(None, Some(-1), None, None), Ok(Sampling::Random { top_k: None, .. })));
        assert!(Penalties::new(Some(0.0), None, None, None).is_err());
        assert!(Penalties::new(None, Some(3.0), None, None).is_err());
        assert!(Penalties::new(None, None, Some(f32::NAN), None).is_err());
        assert!(Penalties::new(None, None, None, Some(-2)).is_err());
    }

    #[test]
    fn penalties_defaults_and_whole_context() {
        assert!(Penalties::default().is_off());
        let p = Penalties::new(Some(1.1), None, None, Some(-1)).expect("valid");
        assert_eq!(p.last_n, u32::MAX);
        assert!(!p.is_off());
    }
}
