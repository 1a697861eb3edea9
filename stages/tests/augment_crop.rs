//! Weak-view geometry: reflect-pad crop, flip, RandomResizedCrop.

use protocon_stages::augment::{
    crop, geometry, AugRng, Chain, CropBox, CropFlip, DrawKey, HorizontalFlip, Image, RandomResizedCrop, ReflectCrop, Workspace,
};

#[test]
fn reflect_padding_mirrors_without_repeating_the_edge() {
    // Row [a b c d] padded by 2 is [c b | a b c d | c b]; a window of 4 at `left`.
    let (a, b, c, d) = (10, 20, 30, 40);
    let src = Image::new(4, 1, 1, vec![a, b, c, d]).unwrap();
    let mut out = Image::default();
    // Height 1 needs top = pad (the only row): pad 2, top 2.
    for (left, want) in [(0, [c, b, a, b]), (1, [b, a, b, c]), (2, [a, b, c, d]), (4, [c, d, c, b])] {
        crop::reflect_crop_into(&src, &mut out, 2, left, 2);
        assert_eq!(out.data(), &want, "left {left}");
    }
    // Vertically too: 1x3 column [p q r] padded by 1 is [q | p q r | q].
    let col = Image::new(1, 3, 1, vec![1, 2, 3]).unwrap();
    crop::reflect_crop_into(&col, &mut out, 1, 1, 0);
    assert_eq!(out.data(), &[2, 1, 2]);
    crop::reflect_crop_into(&col, &mut out, 1, 1, 2);
    assert_eq!(out.data(), &[2, 3, 2]);
}

#[test]
fn flip_mirrors_pixels_not_bytes() {
    let mut img = Image::new(3, 2, 3, (1..=18).collect()).unwrap();
    geometry::flip_horizontal(&mut img);
    assert_eq!(img.data(), &[7, 8, 9, 4, 5, 6, 1, 2, 3, 16, 17, 18, 13, 14, 15, 10, 11, 12]);
    let mut gray = Image::new(2, 2, 1, vec![1, 2, 3, 4]).unwrap();
    geometry::flip_horizontal(&mut gray);
    assert_eq!(gray.data(), &[2, 1, 4, 3]);
}

/// Pixel values that identify their (x, y): R = x, G = y, B = 7.
fn coords(w: usize, h: usize) -> Image {
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[x as u8, y as u8, 7]);
        }
    }
    Image::new(w, h, 3, data).unwrap()
}

#[test]
fn weak_crop_is_a_window_of_the_padded_image_and_covers_all_offsets() {
    // At 32x32 the padding is 4 px: offsets are 0..=8 in each axis (81 windows).
    let mut chain = Chain::new();
    chain.push("crop", ReflectCrop::default());
    let src = coords(32, 32);
    let mut ws = Workspace::new();
    let mut seen = std::collections::HashSet::new();
    for index in 0..2000 {
        let mut img = src.clone();
        chain.apply(&mut img, DrawKey::new(1, 0, index, 0), &mut ws, &mut Vec::new());
        assert_eq!((img.width(), img.height()), (32, 32));
        // The centre pixel of the window tells the offset: out(16,16) = in(16 + left - 4, ..).
        let p = img.pixel(16, 16);
        let (left, top) = (p[0] as usize + 4 - 16, p[1] as usize + 4 - 16);
        let mut want = Image::default();
        crop::reflect_crop_into(&src, &mut want, 4, left, top);
        assert_eq!(img, want);
        seen.insert((left, top));
    }
    assert_eq!(seen.len(), 81, "every offset in 0..=8 x 0..=8 occurs");
}

#[test]
fn crop_flip_flips_about_half_the_time() {
    let mut chain = Chain::new();
    chain.push("crop_flip", CropFlip { padding: 0.0, p: 0.5 });
    let src = coords(8, 8);
    let mut ws = Workspace::new();
    let mut flipped = 0;
    for index in 0..1000 {
        let mut img = src.clone();
        chain.apply(&mut img, DrawKey::new(2, 0, index, 0), &mut ws, &mut Vec::new());
        if img.pixel(0, 0)[0] == 7 {
            flipped += 1;
            let mut back = img.clone();
            geometry::flip_horizontal(&mut back);
            assert_eq!(back, src);
        } else {
            assert_eq!(img, src);
        }
    }
    assert!((430..570).contains(&flipped), "{flipped} of 1000");
    assert!(HorizontalFlip { p: 1.5 }.validated().is_err());
}

#[test]
fn random_resized_crop_draws_boxes_like_torchvision() {
    let rrc = RandomResizedCrop::default();
    let (w, h) = (500, 375);
    let mut areas = Vec::new();
    for index in 0..2000 {
        let mut rng = AugRng::new(DrawKey::new(5, 0, index, 0), 0);
        let b = rrc.draw_box(&mut rng, w, h);
        assert!(b.width >= 1 && b.height >= 1 && b.left + b.width <= w && b.top + b.height <= h, "{b:?}");
        let frac = (b.width * b.height) as f64 / (w * h) as f64;
        let ratio = b.width as f64 / b.height as f64;
        // Rounding the sides to whole pixels moves area and ratio by a little.
        assert!((0.075..=1.0).contains(&frac), "{b:?}");
        assert!((0.74..=1.345).contains(&ratio) || (b.width, b.height) == (w, h), "{b:?}");
        areas.push(frac);
    }
    // Area fraction uniform in [0.08, 1] before rejection; accepted boxes skew a little small.
    let mean = areas.iter().sum::<f64>() / areas.len() as f64;
    assert!((0.40..0.56).contains(&mean), "mean area fraction {mean}");
    // Fallback (no try fits): a 4:1 panorama is centre-cropped to the largest 4:3 box.
    let narrow = RandomResizedCrop { scale: [1.0, 1.0], ratio: [0.75, 4.0 / 3.0], ..RandomResizedCrop::default() };
    let mut rng = AugRng::new(DrawKey::new(0, 0, 0, 0), 0);
    let b = narrow.draw_box(&mut rng, 400, 100);
    assert_eq!((b.left, b.top, b.width, b.height), (133, 0, 133, 100));
}

#[test]
fn random_resized_crop_outputs_the_configured_size() {
    let mut chain = Chain::new();
    chain.push("random_resized_crop", RandomResizedCrop { size: 56, ..RandomResizedCrop::default() });
    let src = Image::filled(120, 90, 3, 77).unwrap();
    let mut ws = Workspace::new();
    let mut img = src.clone();
    let mut log = Vec::new();
    chain.apply(&mut img, DrawKey::new(0, 0, 0, 0), &mut ws, &mut log);
    assert_eq!((img.width(), img.height(), img.channels()), (56, 56, 3));
    // A constant image stays constant through the bilinear resize.
    assert!(img.data().iter().all(|&v| v == 77));
    assert_eq!(log[0].name.to_string(), "ResizedCrop");
}

#[test]
fn region_read_is_the_box_random_resized_crop_draws() {
    let rrc = RandomResizedCrop::default();
    let chain = Chain::new().with("random_resized_crop", rrc.clone()).with("flip", HorizontalFlip::default());
    for index in 0..200 {
        let key = DrawKey::new(3, 1, index, 0);
        assert_eq!(chain.region_read(500, 375, key), rrc.draw_box(&mut key.rng(0), 500, 375));
    }
    // A chain that does not start with a crop reads every pixel.
    let whole = CropBox { left: 0, top: 0, width: 500, height: 375 };
    let flip_first = Chain::new().with("flip", HorizontalFlip::default()).with("random_resized_crop", rrc);
    assert_eq!(flip_first.region_read(500, 375, DrawKey::new(3, 1, 0, 0)), whole);
    assert_eq!(Chain::new().region_read(500, 375, DrawKey::new(3, 1, 0, 0)), whole);
}

/// The fused decode-and-crop path gives every view of a JPEG photo exactly as the full decode
/// does, while skipping the bottom of the file and the columns beside the crops for most views.
#[test]
fn views_of_a_jpeg_decoded_around_the_boxes_they_read_match_the_full_decode() {
    use protocon_stages::augment::{codec, AugmentConfig, AugmentRegistry, Augmenter};
    let (w, h) = (160, 120);
    let photo = Image::new(w, h, 3, (0..w * h * 3).map(|i| (((i * 7919) % 251) ^ (i / 3 % w)) as u8).collect()).unwrap();
    let jpg = codec::encode_jpeg(&photo, 90).unwrap();
    let aug = AugmentConfig::large(64).build(11, &AugmentRegistry::with_builtins()).unwrap();
    let mut full = Image::default();
    codec::decode_into(&jpg, &mut full, 3).unwrap();
    assert_eq!(full.window(), (0, w));
    let (mut part, mut ws, mut log) = (Image::default(), Workspace::new(), Vec::new());
    let (mut want, mut got) = (Image::default(), Image::default());
    let (mut cut, mut narrowed) = (0, 0);
    for index in 0..60u64 {
        let (weak, strong) = (aug.key(0, index, Augmenter::WEAK_VIEW), aug.key(0, index, Augmenter::strong_view_id(0)));
        // One view per decode, and both views from one decode (covering both crops).
        for keys in [&[weak][..], &[strong], &[weak, strong]] {
            let region = aug.region_read(w, h, keys);
            cut += usize::from(region.bottom + 16 < h);
            part.set_pixels(w, h, 3, &vec![0; w * h * 3]).unwrap(); // pixels not decoded stay black
            codec::decode_region_into(&jpg, &mut part, 3, |_, _| region).unwrap();
            let (left, full_width) = part.window();
            assert_eq!((full_width, part.height()), (w, h));
            assert!(left <= region.left && region.right <= left + part.width(), "{region:?} in ({left}, +{})", part.width());
            narrowed += usize::from(part.width() < w);
            for &key in keys {
                aug.view(&full, key, &mut ws, &mut want, &mut log);
                aug.view(&part, key, &mut ws, &mut got, &mut log);
                assert_eq!(got, want, "sample {index}, view {}", key.view);
            }
        }
    }
    assert!(cut >= 40, "only {cut} of 180 decodes could stop an MCU row early or more");
    assert!(narrowed >= 40, "only {narrowed} of 180 decodes were narrowed to a window");
}
