//! The project's labelled caption sets (`data/judging/`) against the prompts: a worked
//! example a prompt shows the judge must not be a caption the judge is scored on, not even
//! one asking the same question (the caption key's normalisation), or the score measures
//! recall of the prompt. And every set carries the dev/test split.

use oni_annotator::judging::{read_rubrics, set_key, CaptionSet, Part};
use oni_annotator::PromptConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The quoted captions of a prompt's worked examples: `"…" -> {…}` lines.
fn worked_examples(prompt: &str) -> Vec<String> {
    prompt
        .lines()
        .filter_map(|l| {
            let (quoted, _) = l.trim().split_once("\" -> {")?;
            Some(quoted.strip_prefix('"')?.to_string())
        })
        .collect()
}

fn sets() -> Vec<CaptionSet> {
    let rubrics = read_rubrics(&repo().join("docs/judging.md")).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo().join("data/judging")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "tsv") {
            out.push(CaptionSet::read(&p, &rubrics).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    assert!(out.len() >= 6, "the sets of data/judging are missing");
    out
}

#[test]
fn no_worked_example_of_any_prompt_is_a_scored_caption() {
    let mut prompts = vec![("the default question".to_string(), PromptConfig::default().classification)];
    for e in std::fs::read_dir(repo().join("data/judging/prompts")).unwrap() {
        let p = e.unwrap().path();
        prompts.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
    }
    let mut keys: HashMap<String, String> = HashMap::new();
    for set in sets() {
        for g in &set.captions {
            keys.insert(set_key(&g.caption), format!("{}:{}", set.name, g.line));
        }
        for p in &set.pairs {
            for c in [&p.first, &p.second] {
                keys.insert(set_key(c), format!("{}:{}", set.name, p.line));
            }
        }
    }
    let mut examples = 0;
    for (name, text) in &prompts {
        for ex in worked_examples(text) {
            examples += 1;
            assert!(
                !keys.contains_key(&set_key(&ex)),
                "{name}: worked example {ex:?} is scored in {}",
                keys[&set_key(&ex)]
            );
        }
    }
    assert!(examples >= 6, "found {examples} worked examples: the default question's six are not being read");
    // and the check itself bites: a set caption written as an example is caught
    let planted = "Examples:\n\"$ - 7 gold pieces.\" -> {\"helpful\": false}\n";
    assert!(worked_examples(planted).iter().any(|e| keys.contains_key(&set_key(e))));
}

#[test]
fn every_caption_set_is_split_into_dev_and_test() {
    for set in sets() {
        let (mut dev, mut test) = (0, 0);
        for part in set.captions.iter().map(|g| g.part).chain(set.pairs.iter().map(|p| p.part)) {
            match part {
                Part::Dev => dev += 1,
                Part::Test => test += 1,
            }
        }
        assert!(dev > 0 && test > 0, "{}: {dev} dev and {test} test items (a `split key-hash` line?)", set.name);
    }
}
