//! Labelled caption sets and the scores of a judge against them (`oni bench judge`).
//!
//! A set is a text file: `goal NAME` once, then one `helpful<TAB>caption` or
//! `unhelpful<TAB>caption` per line (`#` starts a comment). A pair set has
//! `first<TAB>second<TAB>better` lines, `better` being `first`, `second` or `tie`. Every goal
//! must have a rubric in the rubric file (`docs/judging.md`): a heading `## Rubric: NAME`
//! followed somewhere in its section by a line `Goal: "the goal as the prompt states it"`.

use crate::label::{Label, Preference};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{file}:{line}: {reason}")]
    Line { file: PathBuf, line: usize, reason: String },
    #[error("{0}: no `goal NAME` line before the first caption")]
    NoGoal(PathBuf),
    #[error("{0}: no captions")]
    Empty(PathBuf),
}

/// A goal's rubric, as the rubric file states it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rubric {
    pub name: String,
    /// The goal as the prompt's `{goal}` gets it.
    pub goal: String,
}

/// Reads every `## Rubric: NAME` section with its `Goal: "…"` line.
pub fn read_rubrics(path: &Path) -> Result<HashMap<String, Rubric>, SetError> {
    let text = std::fs::read_to_string(path).map_err(|e| SetError::Io(path.into(), e))?;
    let mut out = HashMap::new();
    let mut current: Option<(String, usize)> = None;
    let line_err = |line: usize, reason: String| SetError::Line { file: path.into(), line, reason };
    for (i, line) in text.lines().enumerate() {
        if let Some(name) = line.strip_prefix("## Rubric:") {
            if let Some((prev, at)) = current.take() {
                return Err(line_err(at, format!("rubric {prev:?} has no `Goal: \"…\"` line")));
            }
            current = Some((name.trim().to_string(), i + 1));
        } else if let Some(goal) = line.trim().strip_prefix("Goal:") {
            let Some((name, _)) = current.take() else {
                return Err(line_err(i + 1, "a `Goal:` line outside any `## Rubric:` section".into()));
            };
            let goal = goal.trim().trim_matches('"').trim().to_string();
            if goal.is_empty() {
                return Err(line_err(i + 1, format!("rubric {name:?} has an empty goal")));
            }
            out.insert(name.clone(), Rubric { name, goal });
        }
    }
    if let Some((prev, at)) = current {
        return Err(line_err(at, format!("rubric {prev:?} has no `Goal: \"…\"` line")));
    }
    Ok(out)
}

/// Which part of a set an item is in: `dev` for tuning prompts, examples and grammars,
/// `test` for reporting a judge, never looked at while tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Dev,
    Test,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Dev => "dev",
            Part::Test => "test",
        }
    }

    /// The `split key-hash` rule: an item is in `test` when the first byte of the SHA-256 of
    /// its question key (`intake::question_key` with every rule: numbers, letters, pets) is
    /// odd, so captions that ask the same question are never split across the parts. A pair's
    /// key is its two keys joined by a tab.
    pub fn by_key_hash(key: &str) -> Part {
        use sha2::{Digest, Sha256};
        if Sha256::digest(key.as_bytes())[0] & 1 == 1 {
            Part::Test
        } else {
            Part::Dev
        }
    }
}

/// The question key the split and the worked-example check use: every key rule.
pub fn set_key(caption: &str) -> String {
    use crate::intake::KeyRule::*;
    crate::intake::question_key(caption, &[Numbers, Letters, Pets])
}

/// One labelled caption and where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Gold {
    pub caption: String,
    pub helpful: bool,
    pub line: usize,
    pub part: Part,
}

/// One pair with the better caption (or a tie).
#[derive(Debug, Clone, PartialEq)]
pub struct GoldPair {
    pub first: String,
    pub second: String,
    pub better: Preference,
    pub line: usize,
    pub part: Part,
}

/// A caption set (or a pair set) for one goal.
#[derive(Debug, Clone)]
pub struct CaptionSet {
    pub name: String,
    pub rubric: Rubric,
    pub captions: Vec<Gold>,
    pub pairs: Vec<GoldPair>,
}

/// The labelled captions of a set file whatever its goal (no rubric needed): a run scores
/// its reward model against them (`annotator.gold`).
pub fn read_labelled(path: &Path) -> Result<Vec<Gold>, SetError> {
    let text = std::fs::read_to_string(path).map_err(|e| SetError::Io(path.into(), e))?;
    let goal = text.lines().find_map(|l| l.strip_prefix("goal ")).map(str::trim).unwrap_or_default().to_string();
    let rubrics = HashMap::from([(goal.clone(), Rubric { name: goal.clone(), goal })]);
    let set = CaptionSet::parse(path, &text, &rubrics)?;
    if set.captions.is_empty() {
        return Err(SetError::Empty(path.into()));
    }
    Ok(set.captions)
}

impl CaptionSet {
    /// Reads a set file; its goal must be one of `rubrics`.
    pub fn read(path: &Path, rubrics: &HashMap<String, Rubric>) -> Result<Self, SetError> {
        let text = std::fs::read_to_string(path).map_err(|e| SetError::Io(path.into(), e))?;
        Self::parse(path, &text, rubrics)
    }

    pub fn parse(path: &Path, text: &str, rubrics: &HashMap<String, Rubric>) -> Result<Self, SetError> {
        let err = |line: usize, reason: String| SetError::Line { file: path.into(), line, reason };
        let mut rubric: Option<Rubric> = None;
        let mut captions = Vec::new();
        let mut pairs = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        // `split key-hash` in the header: dev and test by `Part::by_key_hash`; without it
        // every item is dev. `part test` (after the split line): every item from there on is
        // test, for captions added to test from fresh runs.
        let mut split = false;
        let mut forced_test = false;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            if let Some(rule) = line.strip_prefix("split ") {
                if rule.trim() != "key-hash" {
                    return Err(err(n, format!("unknown split rule {:?} (known: key-hash)", rule.trim())));
                }
                split = true;
                continue;
            }
            if let Some(part) = line.strip_prefix("part ") {
                if part.trim() != "test" || !split {
                    return Err(err(
                        n,
                        "`part test` is the only part line, and it needs `split key-hash` before it".into(),
                    ));
                }
                forced_test = true;
                continue;
            }
            if let Some(name) = line.strip_prefix("goal ") {
                let name = name.trim();
                if rubric.is_some() {
                    return Err(err(n, "a second `goal` line; one set holds one goal".into()));
                }
                let r = rubrics.get(name).ok_or_else(|| {
                    let mut known: Vec<&str> = rubrics.keys().map(String::as_str).collect();
                    known.sort();
                    err(n, format!("goal {name:?} has no rubric (rubrics: {})", known.join(", ")))
                })?;
                rubric = Some(r.clone());
                continue;
            }
            if rubric.is_none() {
                return Err(SetError::NoGoal(path.into()));
            }
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                [label, caption] => {
                    let helpful = match label.trim() {
                        "helpful" => true,
                        "unhelpful" => false,
                        "" => return Err(err(n, "missing label (helpful or unhelpful) before the tab".into())),
                        other => return Err(err(n, format!("unknown label {other:?} (helpful or unhelpful)"))),
                    };
                    let caption = caption.trim();
                    if caption.is_empty() {
                        return Err(err(n, "empty caption".into()));
                    }
                    if let Some(first) = seen.insert(caption.to_string(), n) {
                        return Err(err(n, format!("duplicate caption {caption:?} (first on line {first})")));
                    }
                    let part = match (split, forced_test) {
                        (false, _) => Part::Dev,
                        (true, true) => Part::Test,
                        (true, false) => Part::by_key_hash(&set_key(caption)),
                    };
                    captions.push(Gold { caption: caption.into(), helpful, line: n, part });
                }
                [first, second, better] => {
                    let better = match better.trim() {
                        "first" => Preference::First,
                        "second" => Preference::Second,
                        "tie" => Preference::Tie,
                        other => return Err(err(n, format!("unknown preference {other:?} (first, second or tie)"))),
                    };
                    let (first, second) = (first.trim(), second.trim());
                    if first.is_empty() || second.is_empty() {
                        return Err(err(n, "a pair needs two captions".into()));
                    }
                    let key = format!("{first}\t{second}");
                    if let Some(at) = seen.insert(key, n) {
                        return Err(err(n, format!("duplicate pair (first on line {at})")));
                    }
                    let part = match (split, forced_test) {
                        (false, _) => Part::Dev,
                        (true, true) => Part::Test,
                        (true, false) => Part::by_key_hash(&format!("{}\t{}", set_key(first), set_key(second))),
                    };
                    pairs.push(GoldPair { first: first.into(), second: second.into(), better, line: n, part });
                }
                [single] => {
                    return Err(err(n, format!("missing label: expected `helpful<TAB>caption`, got {single:?}")))
                }
                _ => {
                    return Err(err(
                        n,
                        format!("{} tab-separated fields; expected 2 (label, caption) or 3 (pair)", fields.len()),
                    ))
                }
            }
        }
        let rubric = rubric.ok_or_else(|| SetError::NoGoal(path.into()))?;
        // a caption added to test must not ask a question a dev caption asks: it would leak
        let dev_keys: HashMap<String, usize> =
            captions.iter().filter(|g| g.part == Part::Dev).map(|g| (set_key(&g.caption), g.line)).collect();
        if let Some((g, at)) = captions
            .iter()
            .filter(|g| g.part == Part::Test)
            .find_map(|g| dev_keys.get(&set_key(&g.caption)).map(|at| (g, at)))
        {
            return Err(err(
                g.line,
                format!("test caption {:?} asks the same question as dev caption on line {at}", g.caption),
            ));
        }
        if captions.is_empty() && pairs.is_empty() {
            return Err(SetError::Empty(path.into()));
        }
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(CaptionSet { name, rubric, captions, pairs })
    }
}

/// How a judge's labels agree with the gold labels. Unknown answers count as wrong.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Agreement {
    pub n: usize,
    pub accuracy: f64,
    /// Mean of the recall on helpful and on unhelpful captions.
    pub balanced_accuracy: f64,
    /// Cohen's κ = (p_o − p_e) / (1 − p_e), with `unknown` as a category of its own.
    pub kappa: f64,
    pub helpful_rate: f64,
    pub gold_helpful_rate: f64,
    pub unknown_rate: f64,
}

pub fn agreement(pairs: &[(bool, Label)]) -> Agreement {
    let n = pairs.len();
    if n == 0 {
        return Agreement::default();
    }
    let nf = n as f64;
    let count = |f: &dyn Fn(&(bool, Label)) -> bool| pairs.iter().filter(|p| f(p)).count() as f64;
    let tp = count(&|p| p.0 && p.1 == Label::Helpful);
    let tn = count(&|p| !p.0 && p.1 == Label::Unhelpful);
    let gold_h = count(&|p| p.0);
    let gold_u = nf - gold_h;
    let pred_h = count(&|p| p.1 == Label::Helpful);
    let pred_u = count(&|p| p.1 == Label::Unhelpful);
    let unknown = nf - pred_h - pred_u;
    let recall = |hit: f64, of: f64| if of > 0.0 { hit / of } else { 1.0 };
    let p_o = (tp + tn) / nf;
    let p_e = (gold_h * pred_h + gold_u * pred_u) / (nf * nf);
    Agreement {
        n,
        accuracy: p_o,
        balanced_accuracy: (recall(tp, gold_h) + recall(tn, gold_u)) / 2.0,
        kappa: if p_e < 1.0 { (p_o - p_e) / (1.0 - p_e) } else { 0.0 },
        helpful_rate: pred_h / nf,
        gold_helpful_rate: gold_h / nf,
        unknown_rate: unknown / nf,
    }
}

/// The share of pairs where the judge names the gold winner (or the gold tie); unknown
/// answers count as disagreement. Also the share of unknown answers.
pub fn pair_agreement(pairs: &[(Preference, Preference)]) -> (f64, f64) {
    if pairs.is_empty() {
        return (0.0, 0.0);
    }
    let n = pairs.len() as f64;
    let same = pairs.iter().filter(|(g, p)| g == p).count() as f64;
    let unknown = pairs.iter().filter(|(_, p)| *p == Preference::Unknown).count() as f64;
    (same / n, unknown / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rubrics() -> HashMap<String, Rubric> {
        let r = Rubric { name: "keyroom".into(), goal: "find the key".into() };
        HashMap::from([("keyroom".to_string(), r)])
    }

    fn parse(text: &str) -> Result<CaptionSet, SetError> {
        CaptionSet::parse(Path::new("set.tsv"), text, &rubrics())
    }

    #[test]
    fn sets_parse_and_bad_lines_are_named() {
        let s = parse("# keyroom\ngoal keyroom\nhelpful\tYou unlock the door.\nunhelpful\tIt's a wall.\n\n").unwrap();
        assert_eq!(s.captions.len(), 2);
        assert!(s.captions[0].helpful && !s.captions[1].helpful);
        assert_eq!((s.captions[1].line, s.rubric.goal.as_str()), (4, "find the key"));

        let e = parse("goal keyroom\nhelpful\ta\nmaybe\tb\n").unwrap_err().to_string();
        assert!(e.starts_with("set.tsv:3:") && e.contains("unknown label \"maybe\""), "{e}");
        let e = parse("goal keyroom\n\tno label\n").unwrap_err().to_string();
        assert!(e.starts_with("set.tsv:2:") && e.contains("missing label"), "{e}");
        let e = parse("goal keyroom\nYou see a door.\n").unwrap_err().to_string();
        assert!(e.starts_with("set.tsv:2:") && e.contains("missing label"), "{e}");
        let e = parse("goal keyroom\nhelpful\ta\nunhelpful\ta\n").unwrap_err().to_string();
        assert!(e.starts_with("set.tsv:3:") && e.contains("first on line 2"), "{e}");
        let e = parse("goal oracle\nhelpful\ta\n").unwrap_err().to_string();
        assert!(e.starts_with("set.tsv:1:") && e.contains("no rubric") && e.contains("keyroom"), "{e}");
        assert!(matches!(parse("helpful\ta\n"), Err(SetError::NoGoal(_))));
        assert!(matches!(parse("goal keyroom\n"), Err(SetError::Empty(_))));
        let p = parse("goal keyroom\na\tb\tfirst\nb\tc\ttie\n").unwrap();
        assert_eq!(p.pairs[1].better, Preference::Tie);
        let e = parse("goal keyroom\na\tb\twho\n").unwrap_err().to_string();
        assert!(e.contains("set.tsv:2:") && e.contains("unknown preference"), "{e}");
    }

    #[test]
    fn the_split_rule_keeps_a_question_in_one_part_and_test_additions_may_not_leak() {
        // the rule itself, worked by hand: SHA-256("$ - # gold pieces.") starts with an even or
        // odd byte, and every caption with that key must follow it
        use sha2::{Digest, Sha256};
        let gold_part = if Sha256::digest(b"$ - # gold pieces.")[0] & 1 == 1 { Part::Test } else { Part::Dev };
        let s = parse(
            "goal keyroom\nsplit key-hash\nunhelpful\t$ - 12 gold pieces.\nunhelpful\t$ - 7 gold pieces.\n\
             helpful\tYou unlock the door.\nunhelpful\tIt's a wall.\nunhelpful\tYou hear a door open.\n\
             helpful\tk - a brass key.\nhelpful\tYou descend the stairs.\nunhelpful\tThe newt bites!\n",
        )
        .unwrap();
        assert_eq!((s.captions[0].part, s.captions[1].part), (gold_part, gold_part));
        for g in &s.captions {
            assert_eq!(g.part, Part::by_key_hash(&set_key(&g.caption)), "{}", g.caption);
        }
        let parts: std::collections::HashSet<Part> = s.captions.iter().map(|g| g.part).collect();
        assert_eq!(parts.len(), 2, "eight questions all in one part: the rule is not splitting");
        // without the split line everything is dev
        let all_dev = parse("goal keyroom\nhelpful\tYou unlock the door.\nunhelpful\tIt's a wall.\n").unwrap();
        assert!(all_dev.captions.iter().all(|g| g.part == Part::Dev));
        // `part test` forces test, but not for a question a dev caption already asks
        let fresh = parse("goal keyroom\nsplit key-hash\npart test\nhelpful\tYou kill the newt!\n").unwrap();
        assert_eq!(fresh.captions[0].part, Part::Test);
        let numbered =
            ["$ - 12 gold pieces.", "You see here 5 gold pieces.", "You have 3 arrows.", "You hear 2 doors."];
        let dev = numbered.iter().find(|c| Part::by_key_hash(&set_key(c)) == Part::Dev).expect("a dev caption");
        let same_question = dev.replace(char::is_numeric, "9");
        let e =
            parse(&format!("goal keyroom\nsplit key-hash\nunhelpful\t{dev}\npart test\nunhelpful\t{same_question}\n"))
                .unwrap_err()
                .to_string();
        assert!(e.contains("set.tsv:5:") && e.contains("same question as dev caption on line 3"), "{e}");
        let e = parse("goal keyroom\nsplit halves\nhelpful\ta\n").unwrap_err().to_string();
        assert!(e.contains("unknown split rule"), "{e}");
        let e = parse("goal keyroom\npart test\nhelpful\ta\n").unwrap_err().to_string();
        assert!(e.contains("needs `split key-hash`"), "{e}");
    }

    #[test]
    fn rubrics_need_a_goal_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("judging.md");
        std::fs::write(&f, "# J\n## Rubric: keyroom\ntext\nGoal: \"find the key\"\n## Rubric: score\n").unwrap();
        let e = read_rubrics(&f).unwrap_err().to_string();
        assert!(e.contains("judging.md:5:") && e.contains("\"score\""), "{e}");
        std::fs::write(&f, "## Rubric: keyroom\nGoal: \"find the key\"\n## Rubric: score\nGoal: raise the score\n")
            .unwrap();
        let r = read_rubrics(&f).unwrap();
        assert_eq!(r["score"].goal, "raise the score");
        assert_eq!(r["keyroom"].goal, "find the key");
    }

    #[test]
    fn agreement_counts_unknown_as_wrong_and_kappa_is_chance_corrected() {
        use Label::*;
        let perfect = agreement(&[(true, Helpful), (false, Unhelpful), (false, Unhelpful), (true, Helpful)]);
        assert_eq!((perfect.accuracy, perfect.kappa, perfect.balanced_accuracy), (1.0, 1.0, 1.0));
        // calling everything helpful: accuracy = base rate, κ = 0
        let all = agreement(&[(true, Helpful), (false, Helpful), (false, Helpful), (false, Helpful)]);
        assert_eq!((all.accuracy, all.kappa, all.balanced_accuracy, all.helpful_rate), (0.25, 0.0, 0.5, 1.0));
        let unk = agreement(&[(true, Unknown), (false, Unhelpful)]);
        assert_eq!((unk.accuracy, unk.unknown_rate), (0.5, 0.5));
        // p_o = 0.5, p_e = (1·0 + 1·1)/4 = 0.25 → κ = 1/3
        assert!((unk.kappa - 1.0 / 3.0).abs() < 1e-12);
        let (agree, unknown) = pair_agreement(&[
            (Preference::First, Preference::First),
            (Preference::Tie, Preference::Second),
            (Preference::Second, Preference::Unknown),
            (Preference::Tie, Preference::Tie),
        ]);
        assert_eq!((agree, unknown), (0.5, 0.25));
    }
}
