//! The three reward models ONI defines: a lookup of the judge's labels (hashing), a
//! classifier of helpful messages, and a ranking model trained on pairwise preferences.

/// `reward.kind` in the config and the `kind` of every snapshot header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Hashing,
    Classification,
    Ranking,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hashing => "hashing",
            Kind::Classification => "classification",
            Kind::Ranking => "ranking",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "hashing" => Some(Kind::Hashing),
            "classification" => Some(Kind::Classification),
            "ranking" => Some(Kind::Ranking),
            _ => None,
        }
    }

    /// Network outputs: two logits for classification, one score for ranking.
    pub fn outputs(self) -> usize {
        match self {
            Kind::Ranking => 1,
            _ => 2,
        }
    }
}

/// The schema of `reward.kind`: a kind, or `none` for no intrinsic reward.
pub fn schema_or_none(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "enum": ["none", "hashing", "classification", "ranking"]})
}
