//! The `[augment]` TOML table, the registry, and plug-ins.

use protocon_stages::augment::{
    AugContext, AugmentConfig, AugmentError, AugmentRegistry, Augmentation, AugmentedViews, Image, OpSpec, Workspace,
};
use serde::Deserialize;

fn sample() -> Image {
    Image::new(32, 32, 3, (0..32 * 32 * 3).map(|i| (i * 13 % 256) as u8).collect()).unwrap()
}

#[test]
fn parses_the_augment_table_of_a_run_config() {
    #[derive(Deserialize)]
    struct RunConfig {
        augment: AugmentConfig,
    }
    let run: RunConfig = toml::from_str(
        r#"
        [augment]
        weak = ["crop_flip"]
        strong = ["crop_flip", { name = "randaugment", n = 2, p = 0.5 }, "cutout", { name = "gaussian_noise", std = 8.0 }]
        strong_views = 2
        "#,
    )
    .unwrap();
    let c = run.augment;
    assert_eq!(c.weak, vec![OpSpec::named("crop_flip")]);
    assert_eq!(c.strong[1], OpSpec::named("randaugment").with("n", 2).with("p", 0.5));
    assert_eq!(c.strong[3], OpSpec::named("gaussian_noise").with("std", 8.0));
    assert_eq!(c.strong_views, 2);
    let aug = c.build(1, &AugmentRegistry::with_builtins()).unwrap();
    assert_eq!(aug.strong().names().collect::<Vec<_>>(), ["crop_flip", "randaugment", "cutout", "gaussian_noise"]);
    assert_eq!(aug.strong_views(), 2);
}

#[test]
fn defaults_are_the_cifar_setting_and_round_trip() {
    let c = AugmentConfig::from_toml_str("").unwrap();
    assert_eq!(c, AugmentConfig::cifar());
    let names: Vec<&str> = c.strong.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["crop", "randaugment", "flip", "cutout"]);
    let text = toml::to_string(&AugmentConfig::large(224)).unwrap();
    assert_eq!(AugmentConfig::from_toml_str(&text).unwrap(), AugmentConfig::large(224));
    for preset in [AugmentConfig::cifar(), AugmentConfig::large(64), AugmentConfig::simclr(64)] {
        preset.build(0, &AugmentRegistry::default()).unwrap();
    }
}

#[test]
fn unknown_keys_and_names_are_clear_errors() {
    let err = AugmentConfig::from_toml_str("weak = [\"crop\"]\nstorng = []").unwrap_err().to_string();
    assert!(err.contains("storng"), "{err}");

    let c = AugmentConfig::from_toml_str(r#"strong = ["crop", "rotate_everything"]"#).unwrap();
    let err = c.build(0, &AugmentRegistry::with_builtins()).unwrap_err();
    let AugmentError::UnknownOp { ref name, ref known } = err else { panic!("{err}") };
    assert_eq!(name, "rotate_everything");
    assert!(known.iter().any(|k| k == "randaugment") && known.iter().any(|k| k == "gaussian_noise"));
    let msg = err.to_string();
    assert!(msg.contains("`rotate_everything`") && msg.contains("crop_flip, cutout"), "{msg}");

    let c = AugmentConfig::from_toml_str(r#"strong = [{ name = "cutout", sise = 0.5 }]"#).unwrap();
    let msg = c.build(0, &AugmentRegistry::with_builtins()).unwrap_err().to_string();
    assert!(msg.contains("cutout") && msg.contains("sise"), "{msg}");

    let msg = AugmentConfig::from_toml_str(r#"strong = [{ n = 2 }]"#).unwrap_err().to_string();
    assert!(msg.contains("name"), "{msg}");
}

#[test]
fn the_example_plugin_changes_the_output_only_when_configured() {
    let registry = AugmentRegistry::with_builtins();
    let plain = AugmentConfig::from_toml_str(r#"strong = ["crop_flip", "cutout"]"#).unwrap();
    let noisy =
        AugmentConfig::from_toml_str(r#"strong = ["crop_flip", "cutout", { name = "gaussian_noise", std = 8.0 }]"#)
            .unwrap();
    let (a, b) = (plain.build(7, &registry).unwrap(), noisy.build(7, &registry).unwrap());
    let (mut va, mut vb) = (AugmentedViews::new(), AugmentedViews::new());
    let mut ws = Workspace::new();
    a.views(&sample(), 0, 3, &mut ws, &mut va);
    b.views(&sample(), 0, 3, &mut ws, &mut vb);
    // Same slots before the plug-in: identical weak views, identical strong geometry.
    assert_eq!(va.weak, vb.weak);
    let diffs: Vec<i32> =
        va.strong[0].data().iter().zip(vb.strong[0].data()).map(|(&x, &y)| i32::from(y) - i32::from(x)).collect();
    let changed = diffs.iter().filter(|&&d| d != 0).count();
    assert!(changed > diffs.len() / 2, "noise changes most values: {changed}/{}", diffs.len());
    // Noise of std 8: the spread of the differences is about 8 (clipping shrinks it a bit).
    let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
    let sd = (diffs.iter().map(|&d| (f64::from(d) - mean).powi(2)).sum::<f64>() / diffs.len() as f64).sqrt();
    assert!(mean.abs() < 0.6 && (6.5..9.0).contains(&sd), "mean {mean}, sd {sd}");
    let last = vb.strong_ops[0].last().unwrap();
    assert_eq!((last.name.as_str(), last.value), ("gaussian_noise", Some(8.0)));
}

/// A user-defined op, registered from outside the crate.
struct Invert {
    p: f64,
}

impl Augmentation for Invert {
    fn apply(&self, img: &mut Image, ctx: &mut AugContext<'_>) {
        if !ctx.rng().chance(self.p) {
            return ctx.record_skipped();
        }
        img.data_mut().iter_mut().for_each(|v| *v = 255 - *v);
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct InvertParams {
    p: f64,
}

impl Default for InvertParams {
    fn default() -> Self {
        InvertParams { p: 1.0 }
    }
}

#[test]
fn a_custom_op_registers_and_runs_in_a_chain() {
    let mut registry = AugmentRegistry::with_builtins();
    registry.register_params("invert", |p: InvertParams| Ok(Invert { p: p.p }));
    // A closure works as an op too, registered with the raw-table form.
    registry.register("black", |_: &toml::Table| {
        Ok(Box::new(|img: &mut Image, _: &mut AugContext<'_>| img.data_mut().fill(0)) as Box<dyn Augmentation>)
    });
    assert!(registry.contains("invert") && registry.contains("black"));

    let config = AugmentConfig::from_toml_str(
        r#"weak = ["invert"]
strong = ["black", { name = "invert", p = 1.0 }]"#,
    )
    .unwrap();
    let aug = config.build(0, &registry).unwrap();
    let src = sample();
    let mut views = AugmentedViews::new();
    aug.views(&src, 0, 0, &mut Workspace::new(), &mut views);
    let inverted: Vec<u8> = src.data().iter().map(|v| 255 - v).collect();
    assert_eq!(views.weak.data(), &inverted[..]);
    assert!(views.strong[0].data().iter().all(|&v| v == 255));
    // Ops that record nothing are listed under their registered names.
    assert_eq!(views.describe(), "weak: invert\nstrong[0]: black, invert");

    let never = AugmentConfig::from_toml_str(r#"weak = [{ name = "invert", p = 0.0 }]"#).unwrap();
    let aug = never.build(0, &registry).unwrap();
    aug.views(&src, 0, 0, &mut Workspace::new(), &mut views);
    assert_eq!(views.weak, src);
    assert!(views.weak_ops.is_empty(), "a skipped op is not listed");
}

#[test]
fn plugins_can_use_rand_distributions() {
    use rand::RngExt;
    let mut rng = protocon_stages::augment::DrawKey::new(1, 2, 3, 4).rng(5);
    let v: f64 = rng.random_range(10.0..20.0);
    assert!((10.0..20.0).contains(&v));
}
