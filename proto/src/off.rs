//! `Option` config values in TOML, which has no null: an optional key is off when it is
//! absent or when it is written as `""`, so a preset or `--set key=""` can turn off what a
//! base file set. Serialises `None` as `""`, so a resolved config reads back the same.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// For `#[serde(with = "oni_proto::off")]` on an `Option<String>`.
pub fn serialize<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    v.as_deref().unwrap_or("").serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.is_empty()).then_some(s))
}

/// A config enum from its name as the config spells it (`"task"`, `"json_schema"`).
pub fn from_name<T: serde::de::DeserializeOwned>(name: &str) -> Result<T, serde::de::value::Error> {
    use serde::de::IntoDeserializer;
    T::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(name))
}

/// The same for an optional enum: off is written `"none"` (a kind, not an address).
pub mod none {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => "none".serialize(s),
        }
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        let s = String::deserialize(d)?;
        if s == "none" {
            return Ok(None);
        }
        super::from_name(&s).map(Some).map_err(|e| serde::de::Error::custom(format!("{e}, or `none`")))
    }
}
