//! Writes seeded crops of a folder of images as one .npy batch (ImageNet preprocessing):
//! `cargo run --release --example crops -- DIR PER_IMAGE SEED OUT.npy [--random-only]`.
//! The tests make the same crops of the bundled photos in-process; this writes them for
//! other tools (AIMET reference runs, onnxruntime checks).

use std::path::PathBuf;

fn main() -> qforge::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 {
        eprintln!("usage: crops DIR PER_IMAGE SEED OUT.npy [--random-only]");
        std::process::exit(2);
    }
    let bad =
        |what: &'static str, v: &str| qforge::Error::invalid("crops", what, v, "not a number");
    let per: usize = a[1].parse().map_err(|_| bad("PER_IMAGE", &a[1]))?;
    let seed: u64 = a[2].parse().map_err(|_| bad("SEED", &a[2]))?;
    let centre = !a.iter().any(|s| s == "--random-only");
    let pre = qforge::data::images::Preprocess::imagenet();
    let (names, x) = qforge::data::images::crops(&PathBuf::from(&a[0]), per, seed, centre, &pre)?;
    qforge::data::npy::write(&PathBuf::from(&a[3]), &x)?;
    println!(
        "{} crops {:?} -> {} ({})",
        names.len(),
        x.shape(),
        a[3],
        names.join(" ")
    );
    Ok(())
}
