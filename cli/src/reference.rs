//! `oni config reference`: every config key with its default and meaning, generated from
//! the config types themselves (their doc comments, their `Default`), as the Markdown of
//! docs/config.md. A unit test keeps that file equal to this output.

use crate::config::Config;
use serde_json::{Map, Value};

/// One table of keys: a section (`learner`, `actor.hub`) or the top level.
struct Section {
    path: String,
    about: String,
    rows: Vec<[String; 3]>,
}

pub fn render() -> String {
    let schema = serde_json::to_value(schemars::schema_for!(Config)).expect("the config schema serialises");
    let defaults = serde_json::to_value(Config::default()).expect("the default config serialises");
    let defs = schema.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut sections = Vec::new();
    walk(&schema, &defaults, "", &defs, &mut sections);
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the config types by `oni config reference` (do not edit by hand). One TOML\n\
         document configures every role; each key below has the default shown, so a file only\n\
         says what differs. `--set section.key=value` and `ONI__SECTION__KEY=value` override a\n\
         file; `oni config show` prints the resolved document. Optional values are off when\n\
         absent or `\"\"` (an address, a token) or `\"none\"` (a kind).\n",
    );
    for s in sections.iter().filter(|s| !s.rows.is_empty()) {
        let title = if s.path.is_empty() { "Top level".to_string() } else { format!("`[{}]`", s.path) };
        out.push_str(&format!("\n## {title}\n\n"));
        if !s.about.is_empty() {
            out.push_str(&format!("{}\n\n", s.about));
        }
        out.push_str("| key | default | meaning |\n|---|---|---|\n");
        for [k, d, m] in &s.rows {
            out.push_str(&format!("| `{k}` | {d} | {m} |\n"));
        }
    }
    out
}

/// The schema `v` points to (through `$ref`), and the description `v` carries itself.
fn resolve<'a>(v: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => defs.get(name).map(|d| resolve(d, defs)).unwrap_or(v),
        None => v,
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
}

fn walk(schema: &Value, defaults: &Value, path: &str, defs: &Map<String, Value>, out: &mut Vec<Section>) {
    let here = resolve(schema, defs);
    let Some(props) = here.get("properties").and_then(Value::as_object) else { return };
    let about = if path.is_empty() { String::new() } else { text(here, "description") };
    let index = out.len();
    out.push(Section { path: path.to_string(), about, rows: Vec::new() });
    for (name, field) in props {
        let key = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        let default = defaults.get(name).unwrap_or(&Value::Null);
        let target = resolve(field, defs);
        if target.get("properties").is_some() {
            walk(field, default, &key, defs, out);
            continue;
        }
        let mut meaning = text(field, "description");
        if meaning.is_empty() {
            meaning = text(target, "description");
        }
        let values = values(target);
        if !values.is_empty() {
            meaning = format!("{meaning} One of: {}.", values.join("; ")).trim().to_string();
        }
        out[index].rows.push([key, literal(default), meaning.replace('|', "\\|")]);
    }
}

/// An enum's values, each with its own description where it has one.
fn values(v: &Value) -> Vec<String> {
    if let Some(e) = v.get("enum").and_then(Value::as_array) {
        return e.iter().map(|x| format!("`{}`", x.as_str().unwrap_or_default())).collect();
    }
    let Some(alts) = v.get("oneOf").and_then(Value::as_array) else { return Vec::new() };
    // documented variants come one per alternative; undocumented ones share an `enum`
    alts.iter()
        .flat_map(|a| {
            let names: Vec<&str> = match (a.get("const"), a.get("enum").and_then(Value::as_array)) {
                (Some(c), _) => c.as_str().into_iter().collect(),
                (None, Some(e)) => e.iter().filter_map(Value::as_str).collect(),
                (None, None) => Vec::new(),
            };
            let about = text(a, "description");
            let about = about.trim_end_matches('.').to_string();
            names.into_iter().map(
                move |name| {
                    if about.is_empty() {
                        format!("`{name}`")
                    } else {
                        format!("`{name}`: {about}")
                    }
                },
            )
        })
        .collect()
}

/// A default as it would be written in the TOML file.
fn literal(v: &Value) -> String {
    match v {
        Value::Null => "unset".into(),
        // the prompts: the opening words, the rest in `oni config show`
        Value::String(s) if s.len() > 48 => {
            let head: String = s.chars().take(40).collect();
            format!("`{:?}…` (`oni config show`)", head.trim_end())
        }
        Value::String(s) => format!("`{s:?}`"),
        // an f32 widened to f64 prints as 0.9900000095367432: print the f32
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            let narrow = x as f32;
            if narrow as f64 == x {
                format!("`{narrow}`")
            } else {
                format!("`{x}`")
            }
        }
        other => format!("`{other}`"),
    }
}

#[cfg(test)]
mod tests {
    /// docs/config.md is what `oni config reference` prints: a key added, renamed or
    /// re-documented without regenerating the file fails here.
    #[test]
    fn docs_config_md_is_the_generated_reference() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = super::render();
        assert!(
            on_disk == generated,
            "docs/config.md is stale: run `oni config reference > docs/config.md` (cargo run --release -p oni -- config reference)"
        );
        for key in ["transport.token", "learner.relabel", "actor.hub.listen", "reward.kind", "label_bank.kind"] {
            assert!(generated.contains(&format!("`{key}`")), "{key} is missing from the reference");
        }
        assert!(generated.contains("`cuda`") && generated.contains("`ranking`"), "enum values are not listed");
    }
}
