//! The SimCLR-style strong view: hue (recorded from Pillow's HSV round trip), Gaussian blur
//! (hand-worked kernel), grayscale, and the op as a whole.

use protocon_stages::augment::{
    blur, enhance, simclr, AugmentConfig, AugmentRegistry, AugmentedViews, Chain, DrawKey, Image, SimclrStrong,
    Workspace,
};

fn pixels() -> Image {
    Image::new(4, 1, 3, vec![200, 100, 0, 10, 200, 60, 90, 90, 200, 255, 0, 128]).unwrap()
}

#[test]
fn hue_shift_matches_pillow_hsv() {
    // Recorded: img.convert("HSV"), hue byte + int8(f * 255) mod 256, convert("RGB").
    let mut img = pixels();
    simclr::adjust_hue(&mut img, 0.2);
    assert_eq!(img.data(), &[61, 200, 0, 10, 113, 200, 200, 90, 178, 255, 168, 0]);
    let mut img = pixels();
    simclr::adjust_hue(&mut img, -0.1);
    assert_eq!(img.data(), &[200, 0, 14, 73, 200, 10, 90, 155, 200, 228, 0, 255]);
}

#[test]
fn gaussian_blur_of_an_impulse() {
    // k = 3, sigma = 1: taps (e^-1/2, 1, e^-1/2) / (1 + 2 e^-1/2) = (0.2741, 0.4519, 0.2741).
    // An impulse of 255 becomes 255 w_i w_j: centre 52.07 -> 52, sides 31.58 -> 32,
    // corners 19.15 -> 19.
    let mut img = Image::filled(5, 5, 1, 0).unwrap();
    img.pixel_mut(2, 2)[0] = 255;
    blur::gaussian_blur(&mut img, 3, 1.0, &mut Workspace::new());
    #[rustfmt::skip]
    let want = [
        0, 0, 0, 0, 0,
        0, 19, 32, 19, 0,
        0, 32, 52, 32, 0,
        0, 19, 32, 19, 0,
        0, 0, 0, 0, 0,
    ];
    assert_eq!(img.data(), &want);
    // A constant image is a fixed point, borders included (reflect padding).
    let mut flat = Image::filled(9, 7, 3, 90).unwrap();
    blur::gaussian_blur(&mut flat, 5, 1.7, &mut Workspace::new());
    assert!(flat.data().iter().all(|&v| v == 90));
}

#[test]
fn grayscale_puts_the_luma_in_every_channel() {
    let mut img = pixels();
    enhance::grayscale(&mut img);
    let l = enhance::luma(200, 100, 0);
    assert_eq!(&img.data()[..3], &[l, l, l]);
}

#[test]
fn simclr_op_keeps_size_and_applies_everything_when_forced() {
    let all = SimclrStrong {
        flip_p: 1.0,
        jitter_p: 1.0,
        grayscale_p: 1.0,
        blur_p: 1.0,
        solarize_p: 1.0,
        ..SimclrStrong::default()
    };
    let mut chain = Chain::new();
    chain.push("simclr", all.validated().unwrap());
    let src = Image::new(40, 30, 3, (0..40 * 30 * 3).map(|i| (i % 253) as u8).collect()).unwrap();
    let mut img = src.clone();
    let mut log = Vec::new();
    chain.apply(&mut img, DrawKey::new(0, 0, 0, 1), &mut Workspace::new(), &mut log);
    assert_eq!((img.width(), img.height(), img.channels()), (40, 30, 3));
    let names: Vec<String> = log.iter().map(|o| o.name.to_string()).collect();
    for want in ["Flip", "Brightness", "Contrast", "Saturation", "Hue", "Grayscale", "GaussianBlur", "Solarize"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    // Grayscale came after the color ops: every pixel is gray.
    assert!(img.data().chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    // Solarize (>= 128 inverted) was last: no value is 128 or above.
    assert!(img.data().iter().all(|&v| v < 128));
}

#[test]
fn simclr_preset_builds_large_views() {
    let aug = AugmentConfig::simclr(64).build(3, &AugmentRegistry::with_builtins()).unwrap();
    let src = Image::new(120, 90, 3, (0..120 * 90 * 3).map(|i| (i * 7 % 256) as u8).collect()).unwrap();
    let mut views = AugmentedViews::new();
    aug.views(&src, 0, 1, &mut Workspace::new(), &mut views);
    assert_eq!((views.weak.width(), views.weak.height()), (64, 64));
    assert_eq!((views.strong[0].width(), views.strong[0].height()), (64, 64));
    assert!(SimclrStrong { blur_sigma: [0.0, 1.0], ..SimclrStrong::default() }.validated().is_err());
}
