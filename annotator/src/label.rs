use serde::{Deserialize, Serialize};

/// The LLM's judgement of one caption. `Unknown` is an answer that could not be read; it is
/// recorded as such and never counted as "not helpful".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Helpful,
    Unhelpful,
    Unknown,
}

/// A label with its provenance, as stored in the label bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRecord {
    pub caption: String,
    pub label: Label,
    pub prompt_hash: String,
    pub model: String,
    /// The answer as the server gave it, truncated to `RAW_ANSWER_MAX` bytes.
    pub raw_answer: String,
    pub latency_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Prompt + completion tokens the server reported for this answer (a batched request's
    /// usage shared evenly among its prompts); absent where the server does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
    /// The caption the LLM was asked about, when this one got its answer without a question
    /// of its own (same question key, `annotator.caption_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_as: Option<String>,
    /// For an answer given without a question of its own: the rule that derived it
    /// (`Core::derivation_rule`: the caption-key rules, and whether captions are judged
    /// message by message). A run with another rule keeps such answers apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl LabelRecord {
    /// This answer, given to `caption`, which asks the same question.
    pub fn for_alike(&self, caption: &str, time_ms: u64, rule: &str) -> LabelRecord {
        LabelRecord {
            caption: caption.into(),
            rule: Some(rule.into()),
            asked_as: Some(self.asked_as.clone().unwrap_or_else(|| self.caption.clone())),
            latency_ms: 0,
            time_ms,
            tokens: None,
            ..self.clone()
        }
    }
}

pub const RAW_ANSWER_MAX: usize = 512;

/// The LLM's answer to "which of these two messages shows more progress?". A tie counts as
/// half a win for each (Bradley–Terry with ties as ½).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preference {
    First,
    Second,
    Tie,
    Unknown,
}

impl Preference {
    /// Probability that the first message is the better one; `None` for an unreadable answer.
    pub fn target(self) -> Option<f32> {
        match self {
            Preference::First => Some(1.0),
            Preference::Second => Some(0.0),
            Preference::Tie => Some(0.5),
            Preference::Unknown => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preference::First => "first",
            Preference::Second => "second",
            Preference::Tie => "tie",
            Preference::Unknown => "unknown",
        }
    }
}

impl Label {
    /// A caption's label from the labels of its messages: helpful when any message is (a
    /// setback beside progress does not cancel it), unhelpful when all are, else unknown.
    pub fn of_messages(labels: impl IntoIterator<Item = Label>) -> Label {
        let (mut helpful, mut all_unhelpful) = (false, true);
        for l in labels {
            helpful |= l == Label::Helpful;
            all_unhelpful &= l == Label::Unhelpful;
        }
        if helpful {
            Label::Helpful
        } else if all_unhelpful {
            Label::Unhelpful
        } else {
            Label::Unknown
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Label::Helpful => "helpful",
            Label::Unhelpful => "unhelpful",
            Label::Unknown => "unknown",
        }
    }
}

/// A ranking answer with its provenance. `first`/`second` are in the order they were asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairRecord {
    pub first: String,
    pub second: String,
    pub preference: Preference,
    pub prompt_hash: String,
    pub model: String,
    pub raw_answer: String,
    pub latency_ms: u64,
    pub time_ms: u64,
    /// Prompt + completion tokens the server reported for this answer (a batched request's
    /// usage shared evenly among its prompts); absent where the server does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u32>,
}

/// Reads a ranking answer: `{"better": "first"|"second"|"tie"}`, else a leading word
/// (first/second/tie, 1/2, a/b, equal/same/neither). Anything else is `Unknown`.
pub fn parse_preference(answer: &str) -> Preference {
    let t = answer.trim();
    if let Some(start) = t.find('{') {
        if let Some(end) = t[start..].find('}') {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t[start..=start + end]) {
                match v.get("better") {
                    Some(serde_json::Value::String(s)) => return preference_word(s),
                    Some(serde_json::Value::Number(n)) => return preference_word(&n.to_string()),
                    Some(_) => return Preference::Unknown,
                    None => {}
                }
            }
        }
    }
    preference_word(t)
}

fn preference_word(t: &str) -> Preference {
    match first_word(t).as_str() {
        "first" | "1" | "a" | "one" => Preference::First,
        "second" | "2" | "b" | "two" => Preference::Second,
        "tie" | "equal" | "same" | "neither" | "both" => Preference::Tie,
        _ => Preference::Unknown,
    }
}

fn first_word(t: &str) -> String {
    t.trim_start_matches(|c: char| !c.is_alphanumeric())
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase()
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Reads a label from an answer: the JSON object our prompts ask for (`{"helpful": true}`),
/// else a leading yes/no/true/false word. Anything else is `Unknown`.
pub fn parse_label(answer: &str) -> Label {
    let t = answer.trim();
    if let Some(start) = t.find('{') {
        if let Some(end) = t[start..].find('}') {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&t[start..=start + end]) {
                match v.get("helpful") {
                    Some(serde_json::Value::Bool(true)) => return Label::Helpful,
                    Some(serde_json::Value::Bool(false)) => return Label::Unhelpful,
                    Some(serde_json::Value::String(s)) => return word(s),
                    Some(_) => return Label::Unknown,
                    None => {}
                }
            }
        }
    }
    word(t)
}

fn word(t: &str) -> Label {
    match first_word(t).as_str() {
        "yes" | "true" | "helpful" => Label::Helpful,
        "no" | "false" | "unhelpful" => Label::Unhelpful,
        _ => Label::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_robustly_and_garbage_is_unknown() {
        assert_eq!(parse_label(r#"{"helpful": true}"#), Label::Helpful);
        assert_eq!(parse_label(" {\"helpful\":false} "), Label::Unhelpful);
        assert_eq!(parse_label("Sure! {\"helpful\": true} because keys open doors"), Label::Helpful);
        assert_eq!(parse_label("Yes, it does."), Label::Helpful);
        assert_eq!(parse_label("no"), Label::Unhelpful);
        assert_eq!(parse_label("**False**"), Label::Unhelpful);
        assert_eq!(parse_label(""), Label::Unknown);
        assert_eq!(parse_label("The message mentions a door."), Label::Unknown);
        assert_eq!(parse_label("{\"helpful\": 3}"), Label::Unknown);
        assert_eq!(truncate("héllo", 2), "h");
    }

    #[test]
    fn ranking_answers_parse_and_garbage_is_unknown() {
        assert_eq!(parse_preference(r#"{"better": "first"}"#), Preference::First);
        assert_eq!(parse_preference(r#"{"better":"second"}"#), Preference::Second);
        assert_eq!(parse_preference("Answer: {\"better\": \"tie\"}"), Preference::Tie);
        assert_eq!(parse_preference("2"), Preference::Second);
        assert_eq!(parse_preference("Message A, because"), Preference::Unknown);
        assert_eq!(parse_preference("A."), Preference::First);
        assert_eq!(parse_preference(r#"{"better": true}"#), Preference::Unknown);
        assert_eq!(parse_preference(""), Preference::Unknown);
        assert_eq!(Preference::Tie.target(), Some(0.5));
        assert_eq!(Preference::Unknown.target(), None);
    }
}
