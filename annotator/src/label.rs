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
}

pub const RAW_ANSWER_MAX: usize = 512;

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
    let first: String = t
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    match first.as_str() {
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
}
