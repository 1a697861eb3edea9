//! Run directories side by side: what `protocon compare` prints and what the study's README table
//! comes from. A run is read from its files alone (`config.toml`, the effective config written
//! with it, and `metrics.jsonl`), as plain TOML and JSON, so that runs made by older builds, whose
//! configs lack newer keys, still compare.
//!
//! Runs are grouped by algorithm (with ProtoCon's preset) and by run name without its seed
//! suffix (`protocon-2` and `protocon-0` are one group), and a group with several finished runs
//! gets the mean and sample standard deviation of their final and best EMA test accuracy.

use serde::Serialize;
use std::path::{Path, PathBuf};

/// Failures reading a run directory; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("reading {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a run config: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{path}, line {line}: {reason}")]
    Metrics { path: PathBuf, line: usize, reason: String },
    #[error("{path}: no evaluation yet (a run writes one every train.eval_every steps and at its end)")]
    NoEval { path: PathBuf },
}

/// One run directory, summarised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub dir: PathBuf,
    /// The config's `name` without a `-<seed>` suffix.
    pub name: String,
    /// `supervised`, `fixmatch`, `protocon` or `protocon (paper preset)`.
    pub algorithm: String,
    pub seed: u64,
    /// Steps trained (by the last metrics line) and the config's total.
    pub steps: u64,
    pub total_steps: u64,
    /// EMA test accuracy (%) at the last evaluation, and the best one so far.
    pub final_ema: f64,
    pub best_ema: f64,
    /// Wall time (s): the last train line's `elapsed_s` (across resumes), else the `wall time`
    /// line of `profile.txt` (the last process only); `None` when neither is there.
    pub wall_s: Option<f64>,
    /// Mean of the train lines' images/s (training throughput, evaluations left out).
    pub images_per_s: Option<f64>,
}

impl RunRow {
    /// Whether the run trained all its steps.
    pub fn finished(&self) -> bool {
        self.steps >= self.total_steps
    }

    /// Reads `dir`'s `config.toml` and `metrics.jsonl` (and `profile.txt` when the metrics have
    /// no wall time).
    pub fn read(dir: &Path) -> Result<RunRow, CompareError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| CompareError::Read { path, source })
        };
        let config_path = dir.join("config.toml");
        let bad = |reason: String| CompareError::Config { path: config_path.clone(), reason };
        let config: toml::Table = read("config.toml")?.parse().map_err(|e: toml::de::Error| bad(e.message().to_string()))?;
        let text = |t: &toml::Table, key: &str| t.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let int = |t: &toml::Table, key: &str| t.get(key).and_then(|v| v.as_integer()).and_then(|v| u64::try_from(v).ok());
        let algorithm = text(&config, "algorithm").ok_or_else(|| bad("no `algorithm`".into()))?;
        let seed = int(&config, "seed").ok_or_else(|| bad("no `seed`".into()))?;
        let total_steps = config
            .get("train")
            .and_then(|t| t.as_table())
            .and_then(|t| int(t, "steps"))
            .ok_or_else(|| bad("no `train.steps`".into()))?;
        let preset = config.get("protocon").and_then(|t| t.as_table()).and_then(|t| text(t, "preset"));
        let algorithm = match (algorithm.as_str(), preset.as_deref()) {
            ("protocon", Some(p)) if p != "default" => format!("protocon ({p} preset)"),
            _ => algorithm,
        };
        let name = text(&config, "name").unwrap_or_default();
        let name = name.strip_suffix(&format!("-{seed}")).map(str::to_string).unwrap_or(name);

        let metrics_path = dir.join("metrics.jsonl");
        let (mut last_eval, mut steps, mut wall_s, mut rates) = (None, 0, None, Vec::new());
        for (i, line) in read("metrics.jsonl")?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = |reason: String| CompareError::Metrics { path: metrics_path.clone(), line: i + 1, reason };
            let r: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            let num = |key: &str| r.get(key).and_then(|v| v.as_f64());
            let step = r.get("step").and_then(|v| v.as_u64()).ok_or_else(|| bad("no `step`".into()))?;
            steps = steps.max(step + 1);
            match r.get("kind").and_then(|v| v.as_str()) {
                Some("eval") => {
                    let (Some(f), Some(b)) = (num("test_acc_ema"), num("best_test_acc_ema")) else {
                        return Err(bad("an eval line without test_acc_ema / best_test_acc_ema".into()));
                    };
                    last_eval = Some((100.0 * f, 100.0 * b));
                }
                Some("train") => {
                    rates.extend(num("images_per_s"));
                    wall_s = num("elapsed_s").or(wall_s);
                }
                _ => {}
            }
        }
        let (final_ema, best_ema) = last_eval.ok_or(CompareError::NoEval { path: metrics_path })?;
        let wall_s = wall_s.or_else(|| profile_wall_time(dir));
        let images_per_s = (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64);
        Ok(RunRow { dir: dir.to_path_buf(), name, algorithm, seed, steps, total_steps, final_ema, best_ema, wall_s, images_per_s })
    }
}

/// `wall time: 123.4 s` from the run's `profile.txt`.
fn profile_wall_time(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("profile.txt")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("wall time:")?.trim().strip_suffix('s')?.trim().parse().ok())
}

/// Runs of one algorithm and name, seeds in order, with statistics over the finished ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub algorithm: String,
    pub name: String,
    pub runs: Vec<RunRow>,
    /// Over the finished runs: how many, mean and sample sd of final and best EMA accuracy,
    /// mean wall time and images/s.
    pub finished: usize,
    pub final_ema: MeanSd,
    pub best_ema: MeanSd,
    pub wall_s: Option<f64>,
    pub images_per_s: Option<f64>,
}

/// Mean and sample standard deviation (0 for a single value).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: f64,
}

impl MeanSd {
    fn of(values: &[f64]) -> MeanSd {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n.max(1.0);
        let sd = if values.len() > 1 { (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
        MeanSd { mean, sd }
    }
}

fn mean_of(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Option<Vec<f64>> = values.collect();
    v.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// Groups `runs` (in the order each group first appears), seeds sorted within a group.
pub fn group(runs: Vec<RunRow>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for run in runs {
        match groups.iter_mut().find(|g| g.algorithm == run.algorithm && g.name == run.name) {
            Some(g) => g.runs.push(run),
            None => groups.push(Group {
                algorithm: run.algorithm.clone(),
                name: run.name.clone(),
                runs: vec![run],
                finished: 0,
                final_ema: MeanSd { mean: 0.0, sd: 0.0 },
                best_ema: MeanSd { mean: 0.0, sd: 0.0 },
                wall_s: None,
                images_per_s: None,
            }),
        }
    }
    for g in &mut groups {
        g.runs.sort_by_key(|r| r.seed);
        let done: Vec<&RunRow> = g.runs.iter().filter(|r| r.finished()).collect();
        g.finished = done.len();
        g.final_ema = MeanSd::of(&done.iter().map(|r| r.final_ema).collect::<Vec<_>>());
        g.best_ema = MeanSd::of(&done.iter().map(|r| r.best_ema).collect::<Vec<_>>());
        g.wall_s = mean_of(done.iter().map(|r| r.wall_s));
        g.images_per_s = mean_of(done.iter().map(|r| r.images_per_s));
    }
    groups
}

fn wall(s: Option<f64>) -> String {
    s.map_or("—".into(), |s| format!("{s:.0} s"))
}

fn rate(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.0}"))
}

fn steps(r: &RunRow) -> String {
    if r.finished() {
        r.steps.to_string()
    } else {
        format!("{}/{} (running or cut off)", r.steps, r.total_steps)
    }
}

/// The per-group table in Markdown: the README's study table (finished runs only in the
/// statistics; unfinished ones are listed with their step count).
pub fn markdown(groups: &[Group]) -> String {
    let mut out = String::from(
        "| algorithm | run | seeds | final EMA acc. %, per seed | final EMA, mean ± sd | best EMA, mean ± sd | steps | wall / run | img/s |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for g in groups {
        let seeds: Vec<String> = g.runs.iter().map(|r| r.seed.to_string()).collect();
        let finals: Vec<String> =
            g.runs.iter().map(|r| if r.finished() { format!("{:.2}", r.final_ema) } else { format!("({:.2} at step {})", r.final_ema, r.steps) }).collect();
        let stat = |m: MeanSd| if g.finished == 0 { "—".into() } else { format!("{:.2} ± {:.2}", m.mean, m.sd) };
        let all_steps: Vec<String> = g.runs.iter().map(steps).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            g.algorithm,
            g.name,
            seeds.join(" / "),
            finals.join(" / "),
            stat(g.final_ema),
            stat(g.best_ema),
            all_steps.join(", "),
            wall(g.wall_s),
            rate(g.images_per_s)
        ));
    }
    out
}

/// One line per run and one per group with several seeds, aligned for a terminal.
pub fn text(groups: &[Group]) -> String {
    let mut rows = vec![["algorithm", "seed", "steps", "final EMA %", "best EMA %", "wall", "img/s", "run"].map(String::from).to_vec()];
    for g in groups {
        for r in &g.runs {
            rows.push(vec![
                g.algorithm.clone(),
                r.seed.to_string(),
                steps(r),
                format!("{:.2}", r.final_ema),
                format!("{:.2}", r.best_ema),
                wall(r.wall_s),
                rate(r.images_per_s),
                r.dir.display().to_string(),
            ]);
        }
        if g.runs.len() > 1 && g.finished > 0 {
            rows.push(vec![
                g.algorithm.clone(),
                format!("mean of {}", g.finished),
                String::new(),
                format!("{:.2} ± {:.2}", g.final_ema.mean, g.final_ema.sd),
                format!("{:.2} ± {:.2}", g.best_ema.mean, g.best_ema.sd),
                wall(g.wall_s),
                rate(g.images_per_s),
                g.name.clone(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string() + "\n")
        .collect()
}

/// One CSV record per run, then one per group of several seeds (`seed` = `mean`, with the sds).
pub fn csv(groups: &[Group]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["algorithm", "name", "seed", "steps", "total_steps", "final_ema", "best_ema", "final_ema_sd", "best_ema_sd", "wall_s", "images_per_s", "dir"])?;
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for g in groups {
        for r in &g.runs {
            w.write_record([
                g.algorithm.clone(),
                g.name.clone(),
                r.seed.to_string(),
                r.steps.to_string(),
                r.total_steps.to_string(),
                format!("{:.4}", r.final_ema),
                format!("{:.4}", r.best_ema),
                String::new(),
                String::new(),
                opt(r.wall_s),
                opt(r.images_per_s),
                r.dir.display().to_string(),
            ])?;
        }
        if g.runs.len() > 1 && g.finished > 0 {
            w.write_record([
                g.algorithm.clone(),
                g.name.clone(),
                "mean".into(),
                String::new(),
                String::new(),
                format!("{:.4}", g.final_ema.mean),
                format!("{:.4}", g.best_ema.mean),
                format!("{:.4}", g.final_ema.sd),
                format!("{:.4}", g.best_ema.sd),
                opt(g.wall_s),
                opt(g.images_per_s),
                String::new(),
            ])?;
        }
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8(bytes).expect("the CSV writer writes the UTF-8 it is given"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run directory with the config keys `compare` reads and one eval line per given
    /// (step, EMA acc, best EMA acc).
    fn run(root: &Path, dir: &str, config: &str, evals: &[(u64, f64, f64)], elapsed: Option<f64>) -> PathBuf {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.toml"), config).unwrap();
        let mut m = String::new();
        for &(step, acc, best) in evals {
            let mut train = serde_json::json!({"kind": "train", "step": step, "loss": 1.0, "images_per_s": 100.0 + step as f64});
            if let Some(e) = elapsed {
                train["elapsed_s"] = serde_json::json!(e * (step + 1) as f64);
            }
            m.push_str(&format!("{train}\n"));
            m.push_str(&format!("{}\n", serde_json::json!({"kind": "eval", "step": step, "test_acc": 0.1, "test_acc_ema": acc, "best_test_acc": 0.1, "best_test_acc_ema": best})));
        }
        std::fs::write(d.join("metrics.jsonl"), m).unwrap();
        d
    }

    fn config(name: &str, algorithm: &str, seed: u64, extra: &str) -> String {
        format!("name = \"{name}\"\nalgorithm = \"{algorithm}\"\nseed = {seed}\n[train]\nsteps = 4\n{extra}")
    }

    #[test]
    fn groups_by_algorithm_and_name_with_mean_and_sample_sd_over_finished_runs() {
        let root = std::env::temp_dir().join(format!("protocon-compare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dirs = [
            run(&root, "p1", &config("pc-1", "protocon", 1, ""), &[(1, 0.5, 0.5), (3, 0.70, 0.72)], Some(2.0)),
            run(&root, "p0", &config("pc-0", "protocon", 0, ""), &[(3, 0.60, 0.61)], Some(2.0)),
            run(&root, "pp0", &config("pc-paper-0", "protocon", 0, "[protocon]\npreset = \"paper\"\n"), &[(3, 0.55, 0.56)], None),
            run(&root, "f0", &config("fm-0", "fixmatch", 0, ""), &[(3, 0.50, 0.52)], Some(1.0)),
            run(&root, "f1", &config("fm-1", "fixmatch", 1, ""), &[(1, 0.40, 0.40)], Some(1.0)),
        ];
        std::fs::write(dirs[2].join("profile.txt"), "stage ...\nwall time: 12.500 s\nbottleneck: compute\n").unwrap();
        let rows: Vec<RunRow> = dirs.iter().map(|d| RunRow::read(d).unwrap()).collect();
        let groups = group(rows);
        let names: Vec<_> = groups.iter().map(|g| (g.algorithm.as_str(), g.name.as_str(), g.runs.len(), g.finished)).collect();
        assert_eq!(names, [("protocon", "pc", 2, 2), ("protocon (paper preset)", "pc-paper", 1, 1), ("fixmatch", "fm", 2, 1)]);
        let pc = &groups[0];
        assert_eq!(pc.runs.iter().map(|r| r.seed).collect::<Vec<_>>(), [0, 1]);
        // 60 and 70: mean 65, sample sd sqrt(50) = 7.0711; best 61 and 72: 66.5, sqrt(60.5).
        assert!((pc.final_ema.mean - 65.0).abs() < 1e-9 && (pc.final_ema.sd - 50f64.sqrt()).abs() < 1e-9);
        assert!((pc.best_ema.mean - 66.5).abs() < 1e-9 && (pc.best_ema.sd - 60.5f64.sqrt()).abs() < 1e-9);
        // elapsed_s of the last train line (2 s x 4 steps); the images/s mean of p1's 101 and 103 with p0's 103.
        assert_eq!(pc.wall_s, Some(8.0));
        assert!((pc.images_per_s.unwrap() - (102.0 + 103.0) / 2.0).abs() < 1e-9);
        // No elapsed_s: profile.txt's wall time.
        assert_eq!(groups[1].wall_s, Some(12.5));
        // fm-1 stopped at step 2 of 4: listed, not in the statistics.
        assert!(!groups[2].runs[1].finished() && groups[2].final_ema == MeanSd { mean: 50.0, sd: 0.0 });

        let md = markdown(&groups);
        assert!(md.contains("| protocon | pc | 0 / 1 | 60.00 / 70.00 | 65.00 ± 7.07 | 66.50 ± 7.78 | 4 | 8 s |"), "{md}");
        assert!(md.contains("| fixmatch | fm | 0 / 1 | 50.00 / (40.00 at step 2) | 50.00 ± 0.00 |"), "{md}");
        let csv = csv(&groups).unwrap();
        assert!(csv.lines().any(|l| l == "protocon,pc,mean,,,65.0000,66.5000,7.0711,7.7782,8.000,102.500,"), "{csv}");
        assert_eq!(csv.lines().count(), 1 + 5 + 2);
        let text = text(&groups);
        assert!(text.lines().any(|l| l.starts_with("protocon ") && l.contains("mean of 2") && l.contains("65.00 ± 7.07")), "{text}");
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn a_run_without_evaluation_or_config_is_named_in_the_error() {
        let root = std::env::temp_dir().join(format!("protocon-compare-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let d = run(&root, "r", &config("r-0", "fixmatch", 0, ""), &[], None);
        let e = RunRow::read(&d).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl") && e.contains("no evaluation"), "{e}");
        std::fs::write(d.join("config.toml"), "name = \"x\"\n").unwrap();
        let e = RunRow::read(&d).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("algorithm"), "{e}");
        let e = RunRow::read(&root.join("missing")).unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("config.toml"), "{e}");
        std::fs::remove_dir_all(&root).ok();
    }
}
