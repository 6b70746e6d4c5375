//! Prompt templates. Placeholders: `{goal}` and `{message}`. The hash of the filled-in
//! template structure is stored with every label, so changing a prompt never mixes answers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptConfig {
    /// What the agent is trying to do, in words (e.g. "descend the stairs").
    pub goal: String,
    pub classification: String,
}

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig {
            goal: "find the key, unlock the door and go down the stairs".into(),
            classification: "You judge an agent playing a NetHack-like dungeon game.\n\
The agent's goal: {goal}.\n\
After one of its actions the game printed:\n\
\"{message}\"\n\
Is this event a step toward the goal (finding or using something needed, reaching a new place), \
rather than noise or a setback? Reply with JSON only: {\"helpful\": true} or {\"helpful\": false}.\n"
                .into(),
        }
    }
}

impl PromptConfig {
    pub fn classification_prompt(&self, message: &str) -> String {
        self.classification.replace("{goal}", &self.goal).replace("{message}", message)
    }

    /// Identifies the prompt (template and goal) a label was obtained with.
    pub fn classification_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"classification\0");
        h.update(self.classification.as_bytes());
        h.update(b"\0");
        h.update(self.goal.as_bytes());
        h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
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
    }
}
