//! Trains with the example's custom op and MixUp stage:
//!
//! ```sh
//! cargo run --release -p protocon-custom-stages -- [CONFIG.toml] [RUN_DIR]
//! ```
//! Without a config it trains the built-in Fashion-MNIST config for 200 steps with
//! `channel_shuffle` in the strong chain.

use protocon_custom_stages::{train_with_custom_stages, Counters};
use protocon_pipelines::config::{RunConfig, DEFAULT_CONFIG};
use std::sync::atomic::Ordering;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match args.first() {
        Some(path) => RunConfig::load(path.as_ref(), &[])?,
        None => RunConfig::parse(
            DEFAULT_CONFIG,
            "built-in",
            &["train.steps=200".into(), r#"augment.strong=["crop", "flip", { name = "channel_shuffle", p = 0.5 }, "cutout"]"#.into()],
        )?,
    };
    let out = args.get(1).map(String::as_str).unwrap_or("runs/custom-stages");
    let counters = Counters::default();
    let summary = train_with_custom_stages(config, out.as_ref(), 0.4, &counters)?;
    println!(
        "{} steps; channel_shuffle changed {} views, MixUp mixed {} batches; run directory {out}",
        summary.steps_done,
        counters.shuffled_views.load(Ordering::Relaxed),
        counters.mixed_batches.load(Ordering::Relaxed)
    );
    if let Some(e) = summary.last_eval {
        println!("test accuracy {:.2}% (EMA {:.2}%)", 100.0 * e.test_acc, 100.0 * e.test_acc_ema);
    }
    Ok(())
}
