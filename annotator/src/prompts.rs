//! Prompt templates. Placeholders: `{goal}`, and `{message}` (classification) or `{first}`
//! and `{second}` (ranking). The hash of template and goal is stored with every answer, so
//! changing a prompt never mixes answers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `[prompts]`: what the LLM is asked.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PromptConfig {
    /// What the agent is trying to do, in words (e.g. "descend the stairs").
    pub goal: String,
    /// The question about one message: `{goal}` and `{message}` are filled in.
    pub classification: String,
    /// The question about two messages: `{goal}`, `{first}` and `{second}` are filled in.
    pub ranking: String,
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig {
            goal: "find the key, unlock the door and go down the stairs".into(),
            // The rubric's criteria and worked examples from a situation unlike the tasks'
            // ("The rat bites!" beside progress is still progress): with them a 1.5 B judge
            // agreed with the gold keyroom labels at κ 1.00 and the NetHack score labels at
            // 0.47, against 0.02 and 0.39 for a bare question (docs/results/judges.md).
            classification: "You judge an agent playing a NetHack-like dungeon game.\n\
The agent's goal: {goal}.\n\
Answer true only if the printed text reports real progress toward that goal: the agent got, reached, \
opened or used something the goal needs, or something the goal needs is right under the agent now.\n\
Answer false for everything else: walls, empty squares, things that do not matter for this goal, \
failed actions, attacks on the agent, sounds from afar, questions and menus.\n\
If several events are printed, answer true when any one of them is progress.\n\
\n\
Examples, for the goal \"find the lamp and light the dark room\":\n\
\"You see here an oil lamp.\" -> {\"helpful\": true}\n\
\"l - an oil lamp. The rat bites!\" -> {\"helpful\": true}\n\
\"Your lamp is now on.\" -> {\"helpful\": true}\n\
\"You see here a scroll.\" -> {\"helpful\": false}\n\
\"The rat bites!\" -> {\"helpful\": false}\n\
\"It's solid stone.\" -> {\"helpful\": false}\n\
\n\
Now the agent's goal is: {goal}.\n\
The game printed:\n\
\"{message}\"\n\
Reply with JSON only: {\"helpful\": true} or {\"helpful\": false}.\n"
                .into(),
            ranking: "You judge an agent playing a NetHack-like dungeon game.\n\
The agent's goal: {goal}.\n\
Two events the game printed, at different times:\n\
first: \"{first}\"\n\
second: \"{second}\"\n\
Which event shows more progress toward the goal? If neither does, or both equally, say tie. \
Reply with JSON only: {\"better\": \"first\"}, {\"better\": \"second\"} or {\"better\": \"tie\"}.\n"
                .into(),
        }
    }
}

impl PromptConfig {
    pub fn classification_prompt(&self, message: &str) -> String {
        self.classification.replace("{goal}", &self.goal).replace("{message}", message)
    }

    pub fn ranking_prompt(&self, first: &str, second: &str) -> String {
        // fill the goal first so a message containing "{second}" is never substituted
        let t = self.ranking.replace("{goal}", &self.goal);
        let (head, tail) = t.split_once("{first}").unwrap_or((&t, ""));
        format!("{head}{first}{}", tail.replace("{second}", second))
    }

    /// Identifies the prompt (template and goal) a label was obtained with.
    pub fn classification_hash(&self) -> String {
        hash(b"classification", &self.classification, &self.goal)
    }

    pub fn ranking_hash(&self) -> String {
        hash(b"ranking", &self.ranking, &self.goal)
    }

    /// The template settings a user got wrong, named by key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.classification.contains("{message}") {
            return Err("prompts.classification has no {message} placeholder".into());
        }
        let (f, s) = (self.ranking.find("{first}"), self.ranking.find("{second}"));
        if !matches!((f, s), (Some(f), Some(s)) if f < s) {
            return Err("prompts.ranking needs {first} followed by {second}".into());
        }
        Ok(())
    }

    /// The message(s) a prompt made from these templates asks about: one for a
    /// classification prompt, two for a ranking prompt (used by the rule judge, which
    /// answers prompts without a language model).
    pub fn messages_in(&self, prompt: &str) -> Option<Vec<String>> {
        let between = |t: &str, marks: &[&str]| -> Option<Vec<String>> {
            let t = t.replace("{goal}", &self.goal);
            let mut pieces = vec![t.as_str()];
            for m in marks {
                let last = pieces.pop()?;
                let (a, b) = last.split_once(m)?;
                pieces.push(a);
                pieces.push(b);
            }
            let mut rest = prompt.strip_prefix(pieces[0])?;
            let mut out = Vec::new();
            for (i, sep) in pieces[1..].iter().enumerate() {
                let at = if i + 1 == marks.len() { rest.len().checked_sub(sep.len())? } else { rest.find(sep)? };
                if i + 1 == marks.len() && !rest.ends_with(sep) {
                    return None;
                }
                out.push(rest[..at].to_string());
                rest = &rest[at + sep.len()..];
            }
            Some(out)
        };
        between(&self.ranking, &["{first}", "{second}"]).or_else(|| between(&self.classification, &["{message}"]))
    }
}

fn hash(kind: &[u8], template: &str, goal: &str) -> String {
    let mut h = Sha256::new();
    h.update(kind);
    h.update(b"\0");
    h.update(template.as_bytes());
    h.update(b"\0");
    h.update(goal.as_bytes());
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_fills_placeholders_and_hash_tracks_changes() {
        let p = PromptConfig::default();
        let text = p.classification_prompt("You see here a brass key.");
        assert!(text.contains("\"You see here a brass key.\"") && text.contains("go down the stairs"));
        assert!(!text.contains("{message}") && !text.contains("{goal}"));
        let other = PromptConfig { goal: "collect gold".into(), ..p.clone() };
        assert_ne!(p.classification_hash(), other.classification_hash());
        assert_eq!(p.classification_hash(), PromptConfig::default().classification_hash());
        assert_ne!(p.classification_hash(), p.ranking_hash());
    }

    #[test]
    fn ranking_prompt_and_messages_round_trip() {
        let p = PromptConfig::default();
        p.validate().unwrap();
        let text = p.ranking_prompt("You see a {second} door.", "The door opens.");
        assert!(text.contains("first: \"You see a {second} door.\"") && text.contains("second: \"The door opens.\""));
        assert_eq!(
            p.messages_in(&text).unwrap(),
            vec!["You see a {second} door.".to_string(), "The door opens.".into()]
        );
        let c = p.classification_prompt("It's \"solid\" stone.");
        assert_eq!(p.messages_in(&c).unwrap(), vec!["It's \"solid\" stone.".to_string()]);
        assert_eq!(p.messages_in("something else entirely"), None);
        let bad = PromptConfig { ranking: "{second} then {first}".into(), ..p.clone() };
        assert!(bad.validate().unwrap_err().contains("prompts.ranking"));
    }
}
