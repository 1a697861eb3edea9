//! `curves.png`: the training curves of a run, drawn from its `metrics.jsonl`.
//!
//! [`draw`] makes a 2x2 figure of one run: losses, test accuracy (raw and EMA), mask rate and
//! pseudo-label accuracy, against the step. [`draw_many`] overlays several runs' EMA test
//! accuracy and mask rate (seed or algorithm studies). `protocon train` calls [`draw`] when it
//! ends; `protocon plot` calls either.
//!
//! Lines are read as loose JSON, not as the compute stage's `Record`: a field that is absent or
//! `null` (NaN is written as `null`) is skipped, so files from older versions, and the ProtoCon
//! terms (`loss_px`, `loss_pu`, `loss_c`, `cluster_label_acc`, `proto_label_acc`,
//! `reliable_fraction`), are drawn only where they are present. Lines of another `kind` are
//! ignored.
//!
//! Text is rendered with an embedded DejaVu Sans (`pipelines/assets/`, Bitstream Vera licence)
//! through plotters' `ab_glyph` feature, so drawing needs no system font libraries.

use anyhow::{anyhow, bail, Context as _};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
pub(crate) const FAMILY: &str = "sans-serif";

/// Size of the one-run figure, pixels.
pub const SIZE: (u32, u32) = (1200, 800);
/// Size of the overlay figure, pixels.
pub const MANY_SIZE: (u32, u32) = (1200, 500);

/// The fields drawn, by panel: (field, legend label). Train lines give the first, third and
/// fourth panels, eval lines the second.
const LOSSES: &[(&str, &str)] = &[
    ("loss", "loss"),
    ("loss_x", "loss_x (labeled)"),
    ("loss_u", "loss_u (unlabeled)"),
    ("loss_px", "loss_px"),
    ("loss_pu", "loss_pu"),
    ("loss_c", "loss_c"),
];
const ACCURACY: &[(&str, &str)] = &[("test_acc", "raw"), ("test_acc_ema", "EMA")];
const MASK: &[(&str, &str)] = &[("mask_rate", "mask rate"), ("reliable_fraction", "reliable fraction")];
const PSEUDO_LABELS: &[(&str, &str)] = &[
    ("pseudo_label_acc", "masked"),
    ("pseudo_label_acc_all", "all"),
    ("cluster_label_acc", "cluster labels"),
    ("proto_label_acc", "prototype labels"),
];

/// Tableau 10: distinguishable colours for the series.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Every numeric field of a metrics file, as (steps done, value) points in file order.
#[derive(Debug, Default)]
struct Metrics {
    series: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Metrics {
    fn read(path: &Path) -> anyhow::Result<Metrics> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut metrics = Metrics::default();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("{}:{}: cannot read", path.display(), i + 1))?;
            metrics.add_line(&line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        }
        Ok(metrics)
    }

    fn add_line(&mut self, line: &str) -> anyhow::Result<()> {
        if line.trim().is_empty() {
            return Ok(());
        }
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| anyhow!("not a metrics line: {e}"))?;
        let Some(object) = value.as_object() else { bail!("not a metrics line: expected a JSON object") };
        let fields = match object.get("kind").and_then(|k| k.as_str()) {
            Some("train") => [LOSSES, MASK, PSEUDO_LABELS].concat(),
            Some("eval") => ACCURACY.to_vec(),
            Some(_) => return Ok(()),
            None => bail!("not a metrics line: no string field `kind`"),
        };
        let step = object
            .get("step")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| anyhow!("not a metrics line: no integer field `step`"))?;
        // Masked pseudo-label accuracy is written as 0 when no sample passed the threshold:
        // undefined there, so not drawn.
        let nothing_masked = object.get("mask_rate").and_then(|m| m.as_f64()) == Some(0.0);
        for (field, _) in fields {
            if field == "pseudo_label_acc" && nothing_masked {
                continue;
            }
            match object.get(field) {
                None | Some(serde_json::Value::Null) => {}
                Some(v) => {
                    let v = v.as_f64().ok_or_else(|| anyhow!("field `{field}` is {v}, not a number"))?;
                    // Steps in the file are 0-based; the x axis counts steps done.
                    self.series.entry(field.to_string()).or_default().push(((step + 1) as f64, v));
                }
            }
        }
        Ok(())
    }

    fn get(&self, field: &str) -> Option<&[(f64, f64)]> {
        self.series.get(field).map(Vec::as_slice).filter(|s| !s.is_empty())
    }
}

/// One line of a panel.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    /// Sparse series (evaluations) also get a dot per point.
    markers: bool,
}

/// One chart of a figure.
struct Panel {
    title: &'static str,
    y_label: &'static str,
    /// Multiply values by this (fractions shown as %).
    scale: f64,
    /// Keep the y axis inside this range.
    clamp: (f64, f64),
    /// Where the legend goes: away from where the curves usually are.
    legend: SeriesLabelPosition,
    series: Vec<Series>,
}

fn panel(metrics: &Metrics, title: &'static str, y_label: &'static str, fields: &[(&str, &str)], percent: bool) -> Panel {
    let scale = if percent { 100.0 } else { 1.0 };
    let series = fields
        .iter()
        .enumerate()
        .filter_map(|(i, (field, label))| {
            metrics.get(field).map(|points| Series {
                label: label.to_string(),
                points: points.iter().map(|&(x, y)| (x, y * scale)).collect(),
                color: COLORS[i % COLORS.len()],
                markers: fields == ACCURACY,
            })
        })
        .collect();
    // Losses fall, rates and accuracies rise.
    let legend = if percent { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight };
    Panel { title, y_label, scale, clamp: if percent { (0.0, 100.0) } else { (0.0, f64::INFINITY) }, legend, series }
}

/// The four panels of one run; a ProtoCon series is present only when the file has it.
fn panels(metrics: &Metrics) -> Vec<Panel> {
    vec![
        panel(metrics, "losses", "loss", LOSSES, false),
        panel(metrics, "test accuracy", "accuracy %", ACCURACY, true),
        panel(metrics, "mask rate (unlabeled samples above the threshold)", "%", MASK, true),
        panel(metrics, "pseudo-label accuracy", "accuracy %", PSEUDO_LABELS, true),
    ]
}

pub(crate) fn register_font() -> anyhow::Result<()> {
    static REGISTER: Once = Once::new();
    let mut result = Ok(());
    REGISTER.call_once(|| {
        result = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the embedded font DejaVuSans.ttf does not parse"));
    });
    result
}

/// x range shared by every panel of a figure: 0 .. the last step, with room for its marker.
fn x_range(panels: &[Panel]) -> std::ops::Range<f64> {
    let last = panels.iter().flat_map(|p| &p.series).flat_map(|s| &s.points).map(|p| p.0).fold(1.0, f64::max);
    0.0..last * 1.02
}

/// y range of a panel: its finite values with a margin, inside `clamp`.
fn y_range(panel: &Panel) -> std::ops::Range<f64> {
    let values = panel.series.iter().flat_map(|s| &s.points).map(|p| p.1).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..panel.scale;
    }
    let margin = ((hi - lo) * 0.05).max(1e-3 * panel.scale);
    let (lo, hi) = ((lo - margin).max(panel.clamp.0), (hi + margin).min(panel.clamp.1));
    if hi > lo {
        lo..hi
    } else {
        lo..lo + panel.scale
    }
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, panel: &Panel, x: std::ops::Range<f64>) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing `{}`: {e:?}", panel.title);
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, (FAMILY, 18))
        .margin(10)
        .margin_right(25)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(x, y_range(panel))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(panel.y_label)
        .label_style((FAMILY, 13))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format_tick(*y))
        .max_light_lines(1)
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(err)?;
    if panel.series.is_empty() {
        let (w, h) = area.dim_in_pixel();
        area.draw_text("no data yet", &(FAMILY, 16).into_text_style(area), (w as i32 / 2 - 40, h as i32 / 2))
            .map_err(err)?;
        return Ok(());
    }
    for s in &panel.series {
        let color = s.color;
        let points = s.points.iter().copied().filter(|p| p.1.is_finite());
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        if s.markers {
            chart.draw_series(points.map(|p| Circle::new(p, 3, color.filled()))).map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .position(panel.legend.clone())
        .draw()
        .map_err(err)?;
    Ok(())
}

/// A y tick label without trailing zeros: `50`, `0.25`.
fn format_tick(y: f64) -> String {
    let s = format!("{y:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_string() } else { s.to_string() }
}

/// Draw `panels` in a grid of `cols` columns into a PNG of `size` pixels.
fn render(panels: &[Panel], cols: usize, size: (u32, u32), out_png: &Path) -> anyhow::Result<()> {
    register_font()?;
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
        let rows = panels.len().div_ceil(cols);
        let x = x_range(panels);
        for (area, panel) in root.split_evenly((rows, cols)).iter().zip(panels) {
            draw_panel(area, panel, x.clone())?;
        }
        root.present().map_err(|e| anyhow!("{e:?}"))?;
    }
    // plotters' own PNG encoder would pull in a second version of `image`; encode with ours.
    image::save_buffer(out_png, &pixels, size.0, size.1, image::ColorType::Rgb8)
        .with_context(|| format!("cannot write {}", out_png.display()))
}

/// The metrics file of a run directory, or `path` itself when it is a file.
pub fn metrics_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("metrics.jsonl")
    } else {
        path.to_path_buf()
    }
}

/// Draw one run's curves (losses, test accuracy, mask rate, pseudo-label accuracy; 2x2, 1200x800
/// pixels) from `metrics` (a `metrics.jsonl`) into `out_png`.
///
/// Errors: the file cannot be read, a line is not a metrics line (the error names the file and
/// the 1-based line number), or the PNG cannot be written.
pub fn draw(metrics: &Path, out_png: &Path) -> anyhow::Result<()> {
    let m = Metrics::read(metrics)?;
    render(&panels(&m), 2, SIZE, out_png)
}

/// Overlay several runs: EMA test accuracy and mask rate against the step, one colour per run
/// (two panels, 1200x500 pixels). `runs` holds (legend label, run directory or `metrics.jsonl`).
pub fn draw_many(runs: &[(String, PathBuf)], out_png: &Path) -> anyhow::Result<()> {
    if runs.is_empty() {
        bail!("no runs to draw");
    }
    let overlay = |title, y_label| Panel {
        title,
        y_label,
        scale: 100.0,
        clamp: (0.0, 100.0),
        legend: SeriesLabelPosition::LowerRight,
        series: vec![],
    };
    let (mut accuracy, mut mask) = (overlay("test accuracy (EMA)", "accuracy %"), overlay("mask rate", "%"));
    for (i, (label, path)) in runs.iter().enumerate() {
        let m = Metrics::read(&metrics_path(path))?;
        let color = COLORS[i % COLORS.len()];
        for (panel, field, markers) in [(&mut accuracy, "test_acc_ema", true), (&mut mask, "mask_rate", false)] {
            if let Some(points) = m.get(field) {
                let points = points.iter().map(|&(x, y)| (x, 100.0 * y)).collect();
                panel.series.push(Series { label: label.clone(), points, color, markers });
            }
        }
    }
    render(&[accuracy, mask], 2, MANY_SIZE, out_png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("protocon-curves-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A FixMatch-like run of `steps` steps, evaluated every 10; with the ProtoCon fields when
    /// `protocon`.
    fn synthetic(steps: u64, protocon: bool) -> String {
        let mut text = String::new();
        for step in 0..steps {
            let t = step as f64 / steps as f64;
            let mut line = serde_json::json!({
                "kind": "train", "step": step, "epoch": 0, "lr": 0.03,
                "loss": 2.3 * (1.0 - t) + 0.2, "loss_x": 2.0 * (1.0 - t) + 0.1, "loss_u": 0.3 * t,
                "mask_rate": 0.9 * t, "pseudo_label_acc": 0.5 + 0.3 * t, "pseudo_label_acc_all": 0.4 + 0.3 * t,
                "images_per_s": 100.0,
            });
            if protocon {
                let m = line.as_object_mut().unwrap();
                m.insert("loss_px".into(), (0.5 * (1.0 - t)).into());
                m.insert("loss_pu".into(), (0.2 * t).into());
                m.insert("loss_c".into(), serde_json::Value::Null); // NaN, written as null
                m.insert("cluster_label_acc".into(), (0.6 * t).into());
            }
            text.push_str(&format!("{line}\n"));
            if (step + 1) % 10 == 0 {
                let acc = 0.3 + 0.4 * t;
                text.push_str(&format!(
                    "{}\n",
                    serde_json::json!({"kind": "eval", "step": step, "test_acc": acc - 0.02, "test_acc_ema": acc,
                        "best_test_acc": acc - 0.02, "best_test_acc_ema": acc})
                ));
            }
        }
        text
    }

    fn labels(p: &Panel) -> Vec<&str> {
        p.series.iter().map(|s| s.label.as_str()).collect()
    }

    #[test]
    fn fixmatch_file_gives_three_losses_and_protocon_file_adds_its_terms() {
        let mut m = Metrics::default();
        synthetic(30, false).lines().try_for_each(|l| m.add_line(l)).unwrap();
        let p = panels(&m);
        assert_eq!(labels(&p[0]), ["loss", "loss_x (labeled)", "loss_u (unlabeled)"]);
        assert_eq!(labels(&p[1]), ["raw", "EMA"]);
        assert_eq!(p[1].series[1].points, [(10.0, 100.0 * (0.3 + 0.4 * 9.0 / 30.0)), (20.0, 100.0 * (0.3 + 0.4 * 19.0 / 30.0)), (30.0, 100.0 * (0.3 + 0.4 * 29.0 / 30.0))]);
        assert_eq!(labels(&p[2]), ["mask rate"]);
        assert_eq!(labels(&p[3]), ["masked", "all"]);

        let mut m = Metrics::default();
        synthetic(30, true).lines().try_for_each(|l| m.add_line(l)).unwrap();
        let p = panels(&m);
        // loss_c is null on every line: not drawn.
        assert_eq!(labels(&p[0]), ["loss", "loss_x (labeled)", "loss_u (unlabeled)", "loss_px", "loss_pu"]);
        assert_eq!(labels(&p[3]), ["masked", "all", "cluster labels"]);
        assert_eq!(p[0].series[0].points.len(), 30);
    }

    #[test]
    fn draws_a_png_of_the_expected_size_with_content() {
        let dir = temp("draw");
        let metrics = dir.join("metrics.jsonl");
        std::fs::write(&metrics, synthetic(50, true)).unwrap();
        let png = dir.join("curves.png");
        draw(&metrics, &png).unwrap();
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), SIZE);
        let colors: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
        // Lines in several colours, anti-aliased text: far more than a blank or a one-colour image.
        assert!(colors.len() > 50, "only {} distinct colours", colors.len());
        // Every series colour is drawn somewhere.
        for c in &COLORS[..4] {
            assert!(img.pixels().any(|p| p.0 == [c.0, c.1, c.2]), "colour {c:?} missing");
        }
        // Text is drawn: the figure has dark grey/black pixels (labels, captions) outside the lines.
        assert!(img.pixels().filter(|p| p.0 == [0, 0, 0]).count() > 500);

        let png2 = dir.join("many.png");
        draw_many(&[("a".into(), dir.clone()), ("b".into(), metrics.clone())], &png2).unwrap();
        assert_eq!(image::open(&png2).unwrap().to_rgb8().dimensions(), MANY_SIZE);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_file_without_evaluations_still_draws() {
        let dir = temp("noeval");
        let metrics = dir.join("metrics.jsonl");
        let text: String = synthetic(5, false).lines().filter(|l| l.contains("\"train\"")).map(|l| format!("{l}\n")).collect();
        std::fs::write(&metrics, text).unwrap();
        draw(&metrics, &dir.join("curves.png")).unwrap();
        std::fs::write(&metrics, "").unwrap();
        draw(&metrics, &dir.join("curves.png")).unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_malformed_line_is_an_error_naming_the_file_and_line() {
        let dir = temp("bad");
        let metrics = dir.join("metrics.jsonl");
        let mut text = synthetic(3, false);
        text.push_str("{\"kind\":\"train\",\"step\":3,\"loss\":\n");
        std::fs::write(&metrics, &text).unwrap();
        let e = format!("{:#}", draw(&metrics, &dir.join("curves.png")).unwrap_err());
        assert!(e.contains(&format!("{}:4:", metrics.display())), "{e}");
        assert!(!dir.join("curves.png").exists());

        std::fs::write(&metrics, "{\"kind\":\"train\",\"step\":0,\"loss\":1.0}\n{\"kind\":\"train\",\"step\":1,\"loss\":\"high\"}\n").unwrap();
        let e = format!("{:#}", draw(&metrics, &dir.join("curves.png")).unwrap_err());
        assert!(e.contains("metrics.jsonl:2:") && e.contains("`loss`"), "{e}");

        let e = format!("{:#}", draw(&dir.join("absent.jsonl"), &dir.join("curves.png")).unwrap_err());
        assert!(e.contains("absent.jsonl"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
