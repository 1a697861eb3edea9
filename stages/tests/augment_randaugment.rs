//! RandAugment: the magnitude table (FixMatch-pytorch's `fixmatch_augment_pool`), the
//! pick/apply statistics and the USB variant.

use protocon_stages::augment::{
    AugmentRegistry, Chain, DrawKey, Image, OpName, OpParam, RandAugment, RandAugmentOp, Workspace,
};
use std::collections::HashMap;

#[test]
fn magnitude_table_matches_the_fixmatch_pool() {
    use RandAugmentOp as O;
    let p = |op: O, m: u8, neg: bool| op.param(m, neg, 32, 32);
    // Enhance factors: 0.9 m / 10 + 0.05.
    for op in [O::Brightness, O::Color, O::Contrast, O::Sharpness] {
        let OpParam::Factor(f1) = p(op, 1, false) else { panic!() };
        let OpParam::Factor(f9) = p(op, 9, true) else { panic!() };
        assert!((f1 - 0.14).abs() < 1e-12 && (f9 - 0.86).abs() < 1e-12, "{op:?}: {f1} {f9}");
        let OpParam::Factor(f10) = p(op, 10, false) else { panic!() };
        assert!((f10 - 0.95).abs() < 1e-12, "full scale is 0.95");
    }
    // Posterize: int(4 m / 10) + 4.
    let bits: Vec<OpParam> = (1..=9).map(|m| p(O::Posterize, m, false)).collect();
    let want: Vec<OpParam> = [4, 4, 5, 5, 6, 6, 6, 7, 7].iter().map(|&b| OpParam::Bits(b)).collect();
    assert_eq!(bits, want);
    // Rotate: int(30 m / 10) = 3 m degrees, signed.
    assert_eq!(p(O::Rotate, 1, false), OpParam::Degrees(3.0));
    assert_eq!(p(O::Rotate, 9, true), OpParam::Degrees(-27.0));
    // Shear: 0.3 m / 10, signed.
    assert_eq!(p(O::ShearX, 9, true), OpParam::Shear(-(9.0 * 0.3 / 10.0)));
    assert_eq!(p(O::ShearY, 5, false), OpParam::Shear(5.0 * 0.3 / 10.0));
    // Solarize: 256 - int(256 m / 10).
    assert_eq!(p(O::Solarize, 1, false), OpParam::Threshold(231));
    assert_eq!(p(O::Solarize, 9, true), OpParam::Threshold(26));
    // Translate: int(+/-0.3 m / 10 * side): m = 9 on 32 px -> int(8.64) = 8; m = 1 -> 0.
    assert_eq!(p(O::TranslateX, 9, false), OpParam::Pixels(8));
    assert_eq!(p(O::TranslateY, 9, true), OpParam::Pixels(-8));
    assert_eq!(p(O::TranslateX, 1, true), OpParam::Pixels(0));
    assert_eq!(O::TranslateY.param(5, false, 32, 100), OpParam::Pixels(15), "Y uses the height");
    // Unsigned ops ignore the sign coin.
    assert_eq!(p(O::Solarize, 4, true), p(O::Solarize, 4, false));
    assert!(!O::Solarize.is_signed() && O::TranslateX.is_signed());
}

fn run_chain(ra: RandAugment, samples: u64) -> HashMap<String, Vec<u8>> {
    let mut chain = Chain::new();
    chain.push("randaugment", ra);
    let src = Image::new(32, 32, 3, (0..32 * 32 * 3).map(|i| (i * 7 % 251) as u8).collect()).unwrap();
    let mut ws = Workspace::new();
    let mut by_op: HashMap<String, Vec<u8>> = HashMap::new();
    let mut per_image = Vec::new();
    for index in 0..samples {
        let mut img = src.clone();
        let mut log = Vec::new();
        chain.apply(&mut img, DrawKey::new(3, 0, index, 1), &mut ws, &mut log);
        per_image.push(log.len());
        for op in log {
            assert!(matches!(op.name, OpName::Builtin(_)));
            by_op.entry(op.name.to_string()).or_default().push(op.magnitude.unwrap());
        }
    }
    by_op.insert("#per_image".into(), per_image.iter().map(|&n| n as u8).collect());
    by_op
}

#[test]
fn fixmatch_setting_applies_about_one_op_per_image_uniformly() {
    let n = 4000;
    let by_op = run_chain(RandAugment::fixmatch(), n);
    let per_image = &by_op["#per_image"];
    let mean = per_image.iter().map(|&c| f64::from(c)).sum::<f64>() / n as f64;
    // n = 2 picks, each kept with p = 0.5: 1 op per image on average (sd of the mean ~0.011).
    assert!((mean - 1.0).abs() < 0.05, "mean ops per image {mean}");
    assert!(per_image.iter().all(|&c| c <= 2));
    // Every op of the pool shows up about 4000 / 14 ~ 286 times (sd ~ 16).
    for op in RandAugmentOp::ALL {
        let count = by_op.get(op.name()).map_or(0, Vec::len);
        assert!((200..380).contains(&count), "{}: {count}", op.name());
    }
    // Magnitudes are uniform on 1..=9.
    let mut hist = [0usize; 11];
    by_op.iter().filter(|(k, _)| !k.starts_with('#')).flat_map(|(_, v)| v).for_each(|&m| hist[m as usize] += 1);
    assert_eq!(hist[0] + hist[10], 0, "{hist:?}");
    assert!(hist[1..10].iter().all(|&c| (360..560).contains(&c)), "{hist:?}");
}

#[test]
fn usb_setting_always_applies_three_ops() {
    let by_op = run_chain(RandAugment::usb(), 300);
    assert!(by_op["#per_image"].iter().all(|&c| c == 3));
}

#[test]
fn restricted_pool_and_magnitude_come_from_config() {
    let registry = AugmentRegistry::with_builtins();
    let spec: toml::Value = toml::from_str::<toml::Table>(
        r#"x = { name = "randaugment", n = 1, p = 1.0, magnitude = [5, 5], ops = ["rotate", "solarize"] }"#,
    )
    .unwrap()["x"]
        .clone();
    let spec: protocon_stages::augment::OpSpec = spec.try_into().unwrap();
    let mut chain = Chain::new();
    chain.push_boxed("randaugment", registry.build(&spec).unwrap());
    let mut ws = Workspace::new();
    for index in 0..50 {
        let mut img = Image::filled(8, 8, 1, 200).unwrap();
        let mut log = Vec::new();
        chain.apply(&mut img, DrawKey::new(0, 0, index, 1), &mut ws, &mut log);
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].magnitude, Some(5));
        let name = log[0].name.to_string();
        match name.as_str() {
            "Rotate" => assert_eq!(log[0].value.unwrap().abs(), 15.0),
            "Solarize" => assert_eq!(log[0].value, Some(128.0)),
            other => panic!("op {other} is not in the configured pool"),
        }
    }
    let bad: protocon_stages::augment::OpSpec = toml::Value::Table(
        toml::from_str(
            r#"name = "randaugment"
magnitude = [3, 11]"#,
        )
        .unwrap(),
    )
    .try_into()
    .unwrap();
    let err = registry.build(&bad).err().expect("magnitude above 10 is rejected").to_string();
    assert!(err.contains("randaugment") && err.contains("magnitude"), "{err}");
}
