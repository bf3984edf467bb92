//! Times every Conv of a model on its own, at its real shapes, and sums the time by kind
//! (pointwise, depthwise, other): where a forward's time goes.
//!
//! `cargo run --release --example conv_profile -- models/mobilenet_v2.onnx 8`

use std::time::Instant;

use qforge::exec::Runner;
use qforge::gpu::Gpu;
use qforge::graph::{self, ir::Op, shape::conv_output_shape};
use qforge::ops::conv;
use qforge::ops::epilogue::Epilogue;
use qforge::DType;

const NONE: Epilogue<'static> = Epilogue::NONE;

fn main() -> qforge::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .map_or("models/mobilenet_v2.onnx", |s| s.as_str());
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8);
    let gpu = Gpu::shared()?;
    let g = Runner::new(gpu.clone(), graph::load(std::path::Path::new(path))?).graph(batch, &[])?;
    let mut totals: Vec<(&str, f64, f64)> = vec![
        ("pointwise", 0.0, 0.0),
        ("depthwise", 0.0, 0.0),
        ("other", 0.0, 0.0),
    ];
    for node in &g.nodes {
        let Op::Conv(a) = &node.op else { continue };
        let xs = &g.shapes[&node.inputs[0]];
        let w = g.weight(&node.inputs[1]).expect("conv weight");
        let x = gpu.empty(xs, DType::F32)?;
        let wt = gpu.upload(&w.view())?;
        let y = gpu.empty(&conv_output_shape(xs, w.shape(), a)?, DType::F32)?;
        // The kernel the plan picks (im2col + GEMM takes a scratch matrix).
        let kernel = conv::ConvKernel::pick(&gpu, xs, w.shape(), a);
        let col = match kernel.scratch(xs, w.shape(), a)? {
            Some(shape) => Some(gpu.empty(&shape, DType::F32)?),
            None => None,
        };
        let run = || -> qforge::Result<()> {
            let mut e = gpu.encoder();
            conv::conv2d_with(
                &mut e,
                &gpu,
                kernel,
                &x,
                &wt,
                None,
                a,
                &NONE,
                col.as_ref(),
                &y,
            )?;
            gpu.finish(e)
        };
        run()?;
        let t = Instant::now();
        for _ in 0..3 {
            run()?;
        }
        let s = t.elapsed().as_secs_f64() / 3.0;
        let flop = 2.0 * y.len() as f64 * (w.len() / w.shape()[0]) as f64;
        let kind = if w.shape()[2..] == [1, 1] {
            0
        } else if a.groups > 1 {
            1
        } else {
            2
        };
        totals[kind].1 += s;
        totals[kind].2 += flop;
        println!(
            "{:40} x {:?} w {:?}: {:.1} ms, {:.2} GFLOP/s",
            node.name,
            xs,
            w.shape(),
            s * 1e3,
            flop / s / 1e9
        );
    }
    // Elementwise unary ops (Clip, Relu...) at their real sizes.
    let (mut unary_s, mut unary_n) = (0.0, 0usize);
    for node in &g.nodes {
        let Op::Unary(f) = node.op else { continue };
        let xs = &g.shapes[&node.inputs[0]];
        let x = gpu.empty(xs, DType::F32)?;
        let y = gpu.empty(xs, DType::F32)?;
        let run = || -> qforge::Result<()> {
            let mut e = gpu.encoder();
            qforge::ops::elementwise::unary_into(&mut e, &gpu, f, &x, &y)?;
            gpu.finish(e)
        };
        run()?;
        let t = Instant::now();
        for _ in 0..3 {
            run()?;
        }
        unary_s += t.elapsed().as_secs_f64() / 3.0;
        unary_n += x.len();
    }
    println!("unary: {unary_s:.3} s over {unary_n} elements");
    for (kind, s, flop) in totals {
        println!("{kind}: {:.3} s, {:.2} GFLOP/s", s, flop / s / 1e9);
    }
    Ok(())
}
