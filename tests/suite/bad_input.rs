//! The bad-input campaign: hundreds of broken, hostile or contradictory inputs through every
//! subcommand of the `qforge` binary. Each case is judged on the exit status (1 for a typed
//! error, 2 for a command-line usage error; never a panic or an abort), on the message naming the
//! cause, on the files left behind (none: no output folder, scratch folder or temporary file) and
//! on the inputs (byte for byte unchanged). Mutated models extend tests/import_errors.rs to the CLI.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use prost::Message;
use qforge::graph::onnx;

/// The fixtures of one campaign, in a fresh folder.
struct Fixtures {
    dir: PathBuf,
}

impl Fixtures {
    fn new(tag: &str) -> Fixtures {
        let dir = std::env::temp_dir().join(format!("qforge-bad-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = Fixtures { dir };
        let model = std::fs::read(common::repo("models/fmnist_cnn.onnx")).unwrap();
        f.write("model.onnx", &model);
        f.write("empty.onnx", b"");
        f.write(
            "garbage.onnx",
            b"this is not a protobuf at all \x00\x01\x02",
        );
        f.write("truncated.onnx", &model[..model.len() / 3]);
        let m = onnx::ModelProto::decode(&model[..]).unwrap();
        let mut no_out = m.clone();
        no_out.graph.as_mut().unwrap().output.clear();
        f.write("no_outputs.onnx", &no_out.encode_to_vec());
        let mut two_in = m.clone();
        let g = two_in.graph.as_mut().unwrap();
        let mut extra = g.input[0].clone();
        extra.name = Some("second".into());
        g.input.push(extra);
        f.write("two_inputs.onnx", &two_in.encode_to_vec());
        f.write("add2.onnx", &add2_model());
        f.write("gather_ids.onnx", &gather_ids_model());
        let mut nan_w = m.clone();
        let g = nan_w.graph.as_mut().unwrap();
        let t = g
            .initializer
            .iter_mut()
            .find(|t| t.dims.len() == 4)
            .unwrap();
        if let Some(raw) = t.raw_data.as_mut() {
            raw[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        } else {
            t.float_data[0] = f32::NAN;
        }
        f.write("nan_weight.onnx", &nan_w.encode_to_vec());
        let mut opset = m.clone();
        opset
            .opset_import
            .iter_mut()
            .for_each(|o| o.version = Some(99));
        f.write("opset99.onnx", &opset.encode_to_vec());
        // One node from the input to the output: an image-shaped output (Relu; two quantizer
        // groups, its input and output) and a single quantizer group (Flatten).
        for op in ["Relu", "Flatten"] {
            let mut one = m.clone();
            let g = one.graph.as_mut().unwrap();
            g.node = vec![onnx::NodeProto {
                op_type: Some(op.into()),
                name: Some("only".into()),
                input: vec![g.input[0].name.clone().unwrap()],
                output: vec![g.output[0].name.clone().unwrap()],
                ..Default::default()
            }];
            g.initializer.clear();
            g.value_info.clear();
            g.output[0].r#type = if op == "Relu" {
                g.input[0].r#type.clone()
            } else {
                None
            };
            f.write(
                &format!("{}_only.onnx", op.to_lowercase()),
                &one.encode_to_vec(),
            );
        }
        // Data: a good batch, then every way an .npy goes wrong.
        let x = common::fashion_mnist(true, 8).0;
        qforge::data::npy::write(&f.path("x.npy"), &x).unwrap();
        let good = std::fs::read(f.path("x.npy")).unwrap();
        f.write("empty.npy", b"");
        f.write("truncated.npy", &good[..good.len() / 2]);
        f.write(
            "garbage.npy",
            b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4}  \n",
        );
        f.write(
            "huge.npy",
            &npy_header("<f4", "(100000000, 1, 28, 28)", 3000),
        );
        f.write("f64.npy", &npy_header("<f8", "(2, 1, 28, 28)", 2 * 784 * 8));
        f.write("int.npy", &npy_header("<i8", "(2, 1, 28, 28)", 2 * 784 * 8));
        f.write("neg.npy", &npy_header("<f4", "(-1, 28)", 0));
        let mut nan = x.clone();
        nan[[0, 0, 0, 0]] = f32::NAN;
        qforge::data::npy::write(&f.path("nan.npy"), &nan).unwrap();
        let mut inf = x.clone();
        inf[[1, 0, 3, 3]] = f32::INFINITY;
        qforge::data::npy::write(&f.path("inf.npy"), &inf).unwrap();
        let wrong = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[2, 3, 28, 28]));
        qforge::data::npy::write(&f.path("wrong_shape.npy"), &wrong).unwrap();
        let rank = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[2, 784]));
        qforge::data::npy::write(&f.path("wrong_rank.npy"), &rank).unwrap();
        let c3 = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[8, 3, 28, 28]));
        qforge::data::npy::write(&f.path("x_c3.npy"), &c3).unwrap();
        let big = ndarray::ArrayD::<i64>::from_shape_vec(ndarray::IxDyn(&[3]), vec![1, 1 << 25, 2])
            .unwrap();
        qforge::data::npy::write_any(&f.path("big_ids.npy"), &qforge::data::npy::Npy::I64(big))
            .unwrap();
        // Several inputs' data: .npz files for two_inputs.onnx that lack an input, add one,
        // disagree on the sample count, or are damaged.
        use qforge::data::npy::Npy;
        let first = m.graph.as_ref().unwrap().input[0].name.clone().unwrap();
        let npz = |file: &str, arrays: &[(&str, &ndarray::ArrayD<f32>)]| {
            let arrays: Vec<(String, Npy)> = arrays
                .iter()
                .map(|(n, a)| (n.to_string(), Npy::F32((*a).clone())))
                .collect();
            qforge::data::npz::write(&f.path(file), &arrays).unwrap();
        };
        let x2 = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[2, 1, 28, 28]));
        npz("two.npz", &[(&first, &x), ("second", &x)]);
        npz("one_of_two.npz", &[(&first, &x)]);
        npz("three.npz", &[(&first, &x), ("second", &x), ("third", &x)]);
        npz("uneven.npz", &[(&first, &x), ("second", &x2)]);
        let mut damaged = std::fs::read(f.path("two.npz")).unwrap();
        // Inside the first entry's array data (after its 30-byte header, name and .npy header).
        let at = 30 + first.len() + 4 + 200;
        damaged[at] ^= 0x10;
        f.write("damaged.npz", &damaged);
        f.write("not_a_zip.npz", b"PK but not really a zip archive");
        let two = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[2, 1, 28, 28]));
        qforge::data::npy::write(&f.path("x_batch2.npy"), &two).unwrap();
        let zero = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[0, 1, 28, 28]));
        qforge::data::npy::write(&f.path("zero_batch.npy"), &zero).unwrap();
        // IDX: headers that lie.
        let mut idx = vec![0u8, 0, 8, 3];
        idx.extend(0x8000_0000u32.to_be_bytes());
        idx.extend(0x8000_0000u32.to_be_bytes());
        idx.extend(4u32.to_be_bytes());
        idx.extend([0u8; 64]);
        f.write("huge-images-idx3-ubyte", &idx);
        f.write(
            "short-images-idx3-ubyte",
            &[0, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3],
        );
        f.write(
            "bad-labels-idx1-ubyte",
            &[
                0, 0, 8, 1, 0, 0, 0, 8, 200, 200, 200, 200, 200, 200, 200, 200,
            ],
        );
        f.write("few-labels-idx1-ubyte", &[0, 0, 8, 1, 0, 0, 0, 2, 1, 2]);
        f.write("gz-idx3-ubyte.gz", b"\x1f\x8b\x08\x00broken gzip");
        // Images: a folder of broken files, an empty folder.
        std::fs::create_dir_all(f.path("photos_bad")).unwrap();
        let jpg = std::fs::read(common::repo("data/photos/chelsea.jpg")).unwrap();
        f.write("photos_bad/truncated.jpg", &jpg[..jpg.len() / 3]);
        f.write("photos_bad/text.png", b"not a png");
        std::fs::create_dir_all(f.path("photos_trunc")).unwrap();
        f.write("photos_trunc/truncated.jpg", &jpg[..jpg.len() / 3]);
        std::fs::create_dir_all(f.path("photos_empty")).unwrap();
        std::fs::create_dir_all(f.path("photos_one")).unwrap();
        f.write("photos_one/chelsea.jpg", &jpg);
        f.write(
            "config_bad.json",
            br#"{"defaults": {"ops": {}, "params": {}, "per_channel_quantisation": "True"}}"#,
        );
        f.write("config_garbage.json", b"{not json");
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap();
    }

    /// Every file of the fixtures folder with its bytes (outputs folders excluded).
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.is_file() {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An .npy header (version 1) for `descr` and `shape`, followed by `data` zero bytes.
/// A model of two inputs, `a` and `b`, both `[N, C, 28, 28]` float32: `y = a + b`.
fn add2_model() -> Vec<u8> {
    use onnx::tensor_shape_proto::{dimension::Value, Dimension};
    let input = |name: &str| onnx::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(onnx::TypeProto {
            value: Some(onnx::type_proto::Value::TensorType(
                onnx::type_proto::Tensor {
                    elem_type: Some(1),
                    shape: Some(onnx::TensorShapeProto {
                        dim: [
                            Value::DimParam("N".into()),
                            Value::DimParam("C".into()),
                            Value::DimValue(28),
                            Value::DimValue(28),
                        ]
                        .into_iter()
                        .map(|v| Dimension {
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                    }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut y = input("y");
    y.r#type = None;
    onnx::ModelProto {
        ir_version: Some(8),
        opset_import: vec![onnx::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(onnx::GraphProto {
            name: Some("add2".into()),
            node: vec![onnx::NodeProto {
                op_type: Some("Add".into()),
                input: vec!["a".into(), "b".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            input: vec![input("a"), input("b")],
            output: vec![y],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// An embedding lookup: `ids` (int64 `[N]`) gathered from a constant `[10, 3]` table.
fn gather_ids_model() -> Vec<u8> {
    use onnx::tensor_shape_proto::{dimension::Value, Dimension};
    let ids = onnx::ValueInfoProto {
        name: Some("ids".into()),
        r#type: Some(onnx::TypeProto {
            value: Some(onnx::type_proto::Value::TensorType(
                onnx::type_proto::Tensor {
                    elem_type: Some(7),
                    shape: Some(onnx::TensorShapeProto {
                        dim: vec![Dimension {
                            value: Some(Value::DimParam("N".into())),
                            ..Default::default()
                        }],
                    }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    onnx::ModelProto {
        ir_version: Some(8),
        opset_import: vec![onnx::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(onnx::GraphProto {
            name: Some("gather_ids".into()),
            node: vec![onnx::NodeProto {
                op_type: Some("Gather".into()),
                input: vec!["table".into(), "ids".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            initializer: vec![onnx::TensorProto {
                name: Some("table".into()),
                dims: vec![10, 3],
                data_type: Some(1),
                float_data: (0..30).map(|v| v as f32).collect(),
                ..Default::default()
            }],
            input: vec![ids],
            output: vec![onnx::ValueInfoProto {
                name: Some("y".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn npy_header(descr: &str, shape: &str, data: usize) -> Vec<u8> {
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (h.len() + 11) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    out.extend(std::iter::repeat_n(0u8, data));
    out
}

/// One case: arguments (`@name` is a fixture path, `^dir` an output folder that must stay
/// absent or empty), the text the error must contain.
struct Case {
    args: Vec<String>,
    expect: &'static str,
}

fn case(args: &str, expect: &'static str) -> Case {
    Case {
        args: args.split_whitespace().map(str::to_string).collect(),
        expect,
    }
}

/// Runs every case; returns the failures.
fn campaign(f: &Fixtures, cases: &[Case]) -> Vec<String> {
    let before = f.snapshot();
    let mut failures = Vec::new();
    for c in cases {
        let outs: Vec<PathBuf> = c
            .args
            .iter()
            .filter_map(|a| a.strip_prefix('^'))
            .map(|a| f.path(a))
            .collect();
        let args: Vec<String> = c
            .args
            .iter()
            .map(|a| {
                if let Some(n) = a.strip_prefix('@').or_else(|| a.strip_prefix('^')) {
                    f.path(n).display().to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_qforge"))
            .args(&args)
            .env("RUST_LOG", "error")
            .current_dir(&f.dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let label = format!("qforge {}", c.args.join(" "));
        match out.status.code() {
            Some(1) | Some(2) => {}
            Some(0) => failures.push(format!(
                "{label}: succeeded, expected an error containing '{}'",
                c.expect
            )),
            other => failures.push(format!("{label}: exit {other:?} (panic or abort):\n{text}")),
        }
        if text.contains("panicked") || text.contains("RUST_BACKTRACE") {
            failures.push(format!("{label}: panicked:\n{text}"));
        }
        if !text.to_lowercase().contains(&c.expect.to_lowercase()) {
            failures.push(format!("{label}: message lacks '{}':\n{text}", c.expect));
        }
        for o in &outs {
            if o.is_dir() && std::fs::read_dir(o).unwrap().next().is_some() {
                failures.push(format!(
                    "{label}: left files in {}: {:?}",
                    o.display(),
                    std::fs::read_dir(o)
                        .unwrap()
                        .map(|e| e.unwrap().file_name())
                        .collect::<Vec<_>>()
                ));
            }
            let _ = std::fs::remove_dir(o);
        }
        let stray: Vec<String> = std::fs::read_dir(&f.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-") || n.starts_with(".qforge-partial"))
            .collect();
        if !stray.is_empty() {
            failures.push(format!("{label}: left temporary files {stray:?}"));
        }
        if f.snapshot() != before {
            failures.push(format!(
                "{label}: changed the fixtures (an input was written)"
            ));
            break;
        }
    }
    failures
}

fn assert_campaign(f: &Fixtures, cases: &[Case]) {
    let failures = campaign(f, cases);
    eprintln!("{} cases, {} failures", cases.len(), failures.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Inputs that fail before any GPU work: paths, files, flags, on every subcommand.
#[test]
fn bad_files_and_flags_are_typed_errors_on_every_subcommand() {
    let f = Fixtures::new("files");
    let mut cases =
        vec![
        case("inspect @missing.onnx", "reading model"),
        case("inspect @empty.onnx", "the file is empty"),
        case("inspect @garbage.onnx", "not a valid ONNX"),
        case("inspect @truncated.onnx", "not a valid ONNX"),
        case("inspect @no_outputs.onnx", "no outputs"),
        case("inspect @opset99.onnx", "opset 99"),
        case("inspect @model.onnx --batch 0", "--batch"),
        case("inspect @model.onnx --dim N", "NAME=SIZE"),
        case("inspect @model.onnx --dim N=x", "not a size"),
        case("inspect", "required"),
        case("run @model.onnx", "required"),
        case(
            "run @model.onnx --input @x.npy --images @photos_one",
            "cannot be used with",
        ),
        case("run @model.onnx --input @x.npy --output @x.npy", "input"),
        case(
            "run @model.onnx --input @x.npy --output @model.onnx",
            "input",
        ),
        case(
            "run @model.onnx --input @x.npy --output @photos_one",
            "folder",
        ),
        case(
            "run @model.onnx --input @x.npy --outputs @x.npy",
            "not a folder",
        ),
        case(
            "run @model.onnx --images @photos_one --mean nan,0,0",
            "--mean",
        ),
        case(
            "run @model.onnx --images @photos_one --std 0,1,1",
            "--mean/--std",
        ),
        case(
            "run @model.onnx --images @photos_one --mean 0.5,0.5",
            "--mean/--std",
        ),
        case("run @model.onnx --images @photos_one --size 0", "size"),
        case(
            "run @model.onnx --images @photos_one --size 300 --resize 100",
            "crop 300 after resize 100",
        ),
        case("run @model.onnx --images @photos_empty", "no .jpg"),
        case("run @model.onnx --images @photos_bad", "decoding image"),
        case("run @model.onnx --images @photos_trunc", "truncated JPEG"),
        case("run @model.onnx --images @missing_dir", "listing images"),
        case("run @no_outputs.onnx --input @x.npy", "no outputs"),
        case("run @two_inputs.onnx --input @x.npy", "one input"),
        case(
            "quantize @model.onnx --calib @x.npy --batch 0 --out ^out",
            "--batch",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --eval-count 0 --out ^out",
            "--eval-count",
        ),
        // Held-out splits that cannot be made, and flags that contradict each other.
        case(
            "quantize @model.onnx --calib @photos_one --out ^out",
            "needs at least 2",
        ),
        case(
            "compress @model.onnx --data @photos_one --out ^out",
            "needs at least 2",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --holdout 0.01 --out ^out",
            "needs at least 50",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --holdout 1 --out ^out",
            "[0, 1)",
        ),
        case(
            "compress @model.onnx --data @x.npy --holdout nan --out ^out",
            "[0, 1)",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --eval @x.npy --holdout 0.5 --out ^out",
            "cannot be used with",
        ),
        case(
            "compress @model.onnx --data @photos_one --holdout 0 --out ^out",
            "at least 2 fitting images",
        ),
        case(
            "compress @model.onnx --data @x.npy --score-count 0 --out ^out",
            "--score-count",
        ),
        case(
            "compress @model.onnx --data @x.npy --rebuild-count 0 --out ^out",
            "--rebuild-count",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --calib-count 0 --out ^out",
            "--calib-count",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --ptq-samples 0 --out ^out",
            "--ptq-samples",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --seq-mse --seq-mse-candidates 0 --out ^out",
            "--seq-mse-candidates",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --integer --param-bw 4 --out ^out",
            "8-bit",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --scheme bogus --out ^out",
            "scheme",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --encodings-version 3.0 --out ^out",
            "encodings version",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --placement qnn --out ^out",
            "expected targets or aimet-onnx",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --bias-correction sometimes --out ^out",
            "possible values",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --config @missing.json --out ^out",
            "missing.json",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --config @config_bad.json --out ^out",
            "per_channel_quantisation",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --config @config_garbage.json --out ^out",
            "config",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --out @x.npy",
            "not a folder",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --sim-outputs @x.npy --out ^out",
            "input",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --sim-outputs @model.onnx --out ^out",
            "input",
        ),
        case(
            "quantize @no_outputs.onnx --calib @x.npy --out ^out",
            "no outputs",
        ),
        case("quantize @model.onnx --out @.", "input"),
        case(
            "quantize @nan_weight.onnx --calib @x.npy --out ^out",
            "non-finite",
        ),
        case(
            "compress @nan_weight.onnx --eval @x.npy --out ^out",
            "non-finite",
        ),
        case(
            "quantize @empty.onnx --calib @x.npy --out ^out",
            "the file is empty",
        ),
        case(
            "analyze @model.onnx --calib @x.npy --bins 0 --out ^out",
            "--bins",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --amp --candidates W3A8,W8A8 --out ^out",
            "bitwidths of 4, 8 or 16",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --adaround --adaround-iters 0 --out ^out",
            "iterations",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --adaround --adaround-batch 0 --out ^out",
            "batch",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --adaround --adaround-samples 0 --out ^out",
            "--adaround-samples",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --adaround --bias-correction empirical --out ^out",
            "fits each layer's rounding",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --adaround --amp --out ^out",
            "freezes one bitwidth",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --qat --adaround --out ^out",
            "undo the learned rounding",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --qat --epochs 0 --out ^out",
            "epochs",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --qat --qat-batch 100000 --out ^out",
            "training images",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --qat --integer --out ^out",
            "float simulation",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --qat --qat-schedule linear --out ^out",
            "linear",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --qat --calib-labels @few-labels-idx1-ubyte --labels @few-labels-idx1-ubyte --out ^out",
            "give one of them",
        ),
        case(
            "quantize @model.onnx --eval @x.npy --dfq --calib-labels @few-labels-idx1-ubyte --out ^out",
            "--calib-labels",
        ),
        case(
            "compress @model.onnx --data @x.npy --score psnr --out ^out",
            "psnr",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --amp --candidates W8A8 --out ^out",
            "at least two",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --amp --candidates W16A8,W8A16 --out ^out",
            "at least as wide",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --amp --allowed-drop 1.5 --out ^out",
            "[0, 1]",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --amp --allowed-drop=-1 --amp-score sqnr --out ^out",
            "dB >= 0",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --amp --integer --out ^out",
            "--integer",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --amp --seq-mse --out ^out",
            "--seq-mse",
        ),
        case(
            "quantize @model.onnx --calib @x.npy --candidates W4A8,W8A8 --out ^out",
            "--amp",
        ),
        case(
            "analyze @model.onnx --calib @x.npy --histogram-samples 0 --out ^out",
            "--histogram-samples",
        ),
        case("analyze @model.onnx --dfq --out ^out", "--calib"),
        case("analyze @model.onnx --calib @x.npy --out @x.npy", "not a folder"),
        case(
            "analyze @model.onnx --calib @x.npy --param-bw 1 --out ^out",
            "bitwidth",
        ),
        case(
            "analyze @model.onnx --calib @x.npy --integer --out ^out",
            "unexpected argument",
        ),
        case(
            "analyze @nan_weight.onnx --calib @x.npy --out ^out",
            "non-finite",
        ),
        case(
            "compress @model.onnx --data @x.npy --target-macs 0 --out ^out",
            "target ratio",
        ),
        case(
            "compress @model.onnx --data @x.npy --target-macs 1.5 --out ^out",
            "target ratio",
        ),
        case(
            "compress @model.onnx --data @x.npy --target-memory nan --out ^out",
            "target ratio",
        ),
        case(
            "compress @model.onnx --data @x.npy --target-macs 0.5 --target-memory 0.5 --out ^out",
            "cannot be used with",
        ),
        case(
            "compress @model.onnx --data @x.npy --candidates 0,0.5 --out ^out",
            "candidate ratios",
        ),
        case(
            "compress @model.onnx --data @x.npy --candidates 1.0 --out ^out",
            "candidate ratios",
        ),
        case(
            "compress @model.onnx --data @x.npy --candidates a,b --out ^out",
            "invalid",
        ),
        case(
            "compress @model.onnx --data @x.npy --method zip --out ^out",
            "ssvd, wsvd or cp",
        ),
        case(
            "compress @model.onnx --data @x.npy --method ssvd,,cp --out ^out",
            "ssvd, wsvd or cp",
        ),
        case(
            "compress @model.onnx --data @x.npy --multiplicity 0 --out ^out",
            "--multiplicity",
        ),
        case(
            "compress @model.onnx --data @x.npy --samples-per-image 0 --out ^out",
            "--samples-per-image",
        ),
        case(
            "compress @model.onnx --data @x.npy --selection random --out ^out",
            "possible values",
        ),
        case(
            "compress @model.onnx --data @x.npy --eval-count 0 --out ^out",
            "--eval-count",
        ),
        case(
            "compress @model.onnx --data @x.npy --ignore no_such_layer --out ^out",
            "--ignore",
        ),
        case(
            "compress @model.onnx --data @x.npy --out @x.npy",
            "not a folder",
        ),
        case(
            "compress @no_outputs.onnx --eval @x.npy --out ^out",
            "no outputs",
        ),
        case(
            "finetune @model.onnx --data @x.npy --labels @few-labels-idx1-ubyte --out ^out",
            "label",
        ),
        case(
            "finetune @model.onnx --data @x.npy --teacher @garbage.onnx --out ^out",
            "not a valid ONNX",
        ),
        case(
            "finetune @model.onnx --data @x.npy --eval-labels @few-labels-idx1-ubyte --out ^out",
            "needs --eval",
        ),
        case(
            "finetune @model.onnx --data @x.npy --out @x.npy",
            "not a folder",
        ),
        case(
            "finetune @nan_weight.onnx --data @x.npy --out ^out",
            "non-finite",
        ),
        case(
            "finetune @model.onnx --data @x.npy --optimizer lbfgs --out ^out",
            "invalid value",
        ),
        case(
            "finetune @model.onnx --data @x.npy --lr nan --out ^out",
            "learning rate",
        ),
        case("finetune @model.onnx --out ^out", "--data"),
        case(
            "finetune @model.onnx --data @x.npy --momentum 0.9 --out ^out",
            "sgd only",
        ),
        case(
            "finetune @model.onnx --data @x.npy --optimizer sgd --momentum 1 --out ^out",
            "--momentum",
        ),
        case("bogus-subcommand", "unrecognized subcommand"),
    ];
    // Every data flag with every kind of broken data file.
    let broken = [
        ("missing.npy", "missing.npy"),
        ("empty.npy", "the file is empty"),
        ("truncated.npy", "the file holds"),
        ("garbage.npy", "header"),
        ("huge.npy", "the file holds"),
        ("f64.npy", "'<f8'"),
        ("int.npy", "'<i8'"),
        ("neg.npy", "not a size"),
        ("nan.npy", "non-finite"),
        ("inf.npy", "non-finite"),
        ("zero_batch.npy", "empty"),
        ("huge-images-idx3-ubyte", "overflow"),
        ("short-images-idx3-ubyte", "the header promises"),
        ("gz-idx3-ubyte.gz", "reading IDX"),
        ("photos_empty", "no .jpg"),
        ("photos_bad", "decoding image"),
        ("photos_trunc", "truncated JPEG"),
    ];
    for (file, expect) in broken {
        cases.push(case(
            &format!("quantize @model.onnx --calib @{file} --out ^out"),
            expect,
        ));
        cases.push(case(
            &format!("quantize @model.onnx --calib @x.npy --eval @{file} --out ^out"),
            expect,
        ));
        cases.push(case(
            &format!("compress @model.onnx --data @{file} --out ^out"),
            expect,
        ));
        cases.push(case(
            &format!("finetune @model.onnx --data @{file} --out ^out"),
            expect,
        ));
        if file.ends_with(".npy") && !matches!(file, "nan.npy" | "inf.npy" | "zero_batch.npy") {
            cases.push(case(&format!("run @model.onnx --input @{file}"), expect));
        }
    }
    for (bad, expect) in [
        ("-1", "unexpected argument"),
        ("x", "invalid value"),
        ("1e3", "invalid value"),
        ("18446744073709551616", "invalid value"),
    ] {
        for flag in [
            "--batch",
            "--calib-count",
            "--eval-count",
            "--ptq-samples",
            "--per-layer-samples",
            "--param-bw",
            "--act-bw",
            "--seq-mse-candidates",
        ] {
            cases.push(case(
                &format!("quantize @model.onnx --calib @x.npy {flag} {bad} --out ^out"),
                expect,
            ));
        }
        for flag in ["--multiplicity", "--samples-per-image", "--eval-count"] {
            cases.push(case(
                &format!("compress @model.onnx --data @x.npy {flag} {bad} --out ^out"),
                expect,
            ));
        }
        for flag in [
            "--batch",
            "--epochs",
            "--accumulate",
            "--read-every",
            "--data-count",
        ] {
            cases.push(case(
                &format!("finetune @model.onnx --data @x.npy {flag} {bad} --out ^out"),
                expect,
            ));
        }
        cases.push(case(&format!("inspect @model.onnx --batch {bad}"), expect));
        cases.push(case(
            &format!("run @model.onnx --images @photos_one --size {bad}"),
            expect,
        ));
    }
    for bw in ["0", "1", "17", "64"] {
        cases.push(case(
            &format!("quantize @model.onnx --calib @x.npy --param-bw {bw} --out ^out"),
            "bitwidth",
        ));
        cases.push(case(
            &format!("quantize @model.onnx --calib @x.npy --act-bw {bw} --out ^out"),
            "bitwidth",
        ));
    }
    assert!(cases.len() >= 150, "{} cases", cases.len());
    assert_campaign(&f, &cases);
}

/// Inputs that are caught after the model runs on the GPU: shapes, labels, NaN weights,
/// outputs in the way.
#[test]
fn bad_inputs_found_on_the_gpu_are_typed_errors() {
    let Some(_) = common::gpu() else { return };
    let f = Fixtures::new("gpu");
    let labels = "--labels";
    let cases = vec![
        case("run @model.onnx --input @wrong_shape.npy", "dim 1 = 1"),
        case("run @model.onnx --input @wrong_rank.npy", "4 dims"),
        case("run @model.onnx --input @zero_batch.npy", "empty"),
        case("run @model.onnx --input @nan.npy", "non-finite"),
        // Several inputs, one .npy each.
        case("run @add2.onnx --input @x.npy", "one input"),
        case("run @add2.onnx --input a=x.npy", "input 'b'"),
        case("run @add2.onnx --input a=x.npy --input c=x.npy", "no input named"),
        case("run @add2.onnx --input a=x.npy --input a=x.npy --input b=x.npy", "twice"),
        case("run @add2.onnx --input @x.npy --input b=x.npy", "NAME=FILE"),
        case("run @add2.onnx --input a=x.npy --input b=wrong_rank.npy", "4 dims"),
        case("run @add2.onnx --input a=x.npy --input b=x_batch2.npy", "dim 0 = 8 as in input 'a'"),
        case("run @add2.onnx --input a=x.npy --input b=x_c3.npy", "dim 'C' = 1 as in input 'a'"),
        case("run @add2.onnx --input a=x.npy --input b=int.npy", "'<i8'"),
        case("run @add2.onnx --input a=x.npy --input b=missing.npy", "missing.npy"),
        // Integer inputs: the declared type, and values exact in the GPU's f32.
        case("run @gather_ids.onnx --input @big_ids.npy", "element 1 is 33554432"),
        case("run @gather_ids.onnx --input @x.npy", "declares int64"),
        case(&format!("quantize @model.onnx --calib @x.npy --eval @x.npy {labels} @bad-labels-idx1-ubyte --out ^out"), "outside the model's 10 classes"),
        case(&format!("quantize @model.onnx --calib @x.npy --eval @x.npy {labels} @few-labels-idx1-ubyte --out ^out"), "label"),
        case("quantize @model.onnx --calib @x.npy --eval @x.npy --qat --calib-labels @few-labels-idx1-ubyte --out ^out", "label"),
        case(&format!("compress @model.onnx --data @x.npy {labels} @bad-labels-idx1-ubyte --out ^out"), "outside the model's 10 classes"),
        case(&format!("compress @model.onnx --data @x.npy {labels} @few-labels-idx1-ubyte --out ^out"), "label"),
        case("compress @model.onnx --data @x.npy --multiplicity 100000 --method ssvd --out ^out", "--multiplicity"),
        case("quantize @two_inputs.onnx --calib @x.npy --out ^out", "one array per input"),
        case("analyze @two_inputs.onnx --calib @x.npy --out ^out", "one array per input"),
        case("quantize @two_inputs.onnx --calib @one_of_two.npz --out ^out", "no array for the input 'second'"),
        case("quantize @two_inputs.onnx --calib @three.npz --out ^out", "'third', which is not an input"),
        case("quantize @two_inputs.onnx --calib @uneven.npz --out ^out", "8 samples as in"),
        case("quantize @two_inputs.onnx --calib @damaged.npz --out ^out", "CRC-32"),
        case("quantize @two_inputs.onnx --calib @not_a_zip.npz --out ^out", "not a zip archive"),
        case("quantize @model.onnx --calib @two.npz --out ^out", "not an input of the model"),
        case("compress @two_inputs.onnx --data @two.npz --out ^out", "a model with one input"),
        case("finetune @two_inputs.onnx --data @two.npz --out ^out", "a model with one input"),
        case("quantize @flatten_only.onnx --calib @x.npy --amp --out ^out", "groups"),
        case("quantize @model.onnx --calib @x.npy --amp --amp-samples 0 --out ^out", "--amp-samples"),
        case("quantize @model.onnx --calib @wrong_shape.npy --out ^out", "dim 1 of the data is 3, the model fixes it at 1"),
        case("finetune @model.onnx --data @x.npy --epochs 0 --out ^out", "--epochs"),
        case("finetune @model.onnx --data @x.npy --lr 0 --out ^out", "learning rate"),
        case("finetune @model.onnx --data @x.npy --loss ce --out ^out", "cross-entropy needs"),
        case(&format!("finetune @model.onnx --data @x.npy {labels} @bad-labels-idx1-ubyte --out ^out"), "outside the model's 10 classes"),
        case("finetune @model.onnx --data @x.npy --freeze nothing* --out ^out", "--freeze"),
        case("finetune @model.onnx --data @x.npy --batch 2 --resume --out ^out", "checkpoint"),
        case("finetune @model.onnx --data @x.npy --augment rotate --out ^out", "--augment"),
        case("finetune @model.onnx --data @x.npy --batch 100 --out ^out", "--batch"),
        case("finetune @model.onnx --data @wrong_shape.npy --out ^out", "dim 1 = 1"),
        case("finetune @model.onnx --data @x.npy --teacher @opset99.onnx --loss kd --out ^out", "opset"),
    ];
    assert_campaign(&f, &cases);
}

/// A model whose output is not a `[samples, classes]` array quantizes (agreement is taken over
/// each sample's values) instead of panicking in the evaluation.
#[test]
fn an_image_shaped_output_quantizes() {
    let Some(_) = common::gpu() else { return };
    let f = Fixtures::new("image-out");
    let out = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args([
            "quantize",
            "relu_only.onnx",
            "--calib",
            "x.npy",
            "--out",
            "out",
        ])
        .env("RUST_LOG", "error")
        .current_dir(&f.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
}

/// A NaN weight reaches the output as onnxruntime computes it: NaN logits, never finite ones.
#[test]
fn a_nan_weight_is_never_lost_inside_a_kernel() {
    let Some(_) = common::gpu() else { return };
    let f = Fixtures::new("nan");
    let out = Command::new(env!("CARGO_BIN_EXE_qforge"))
        .args([
            "run",
            "nan_weight.onnx",
            "--input",
            "x.npy",
            "--output",
            "y.npy",
        ])
        .current_dir(&f.dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let y = qforge::data::npy::read(&f.path("y.npy"));
    // The reader refuses nothing finite-related; read the raw values.
    let y: ndarray::ArrayD<f32> = match y {
        Ok(y) => y,
        Err(e) => panic!("{e}"),
    };
    assert!(
        y.iter().any(|v| v.is_nan()),
        "a NaN weight must give NaN outputs (onnxruntime does): {y:?}"
    );
}

/// Outputs that would replace inputs are refused, whatever way they name them.
#[test]
fn outputs_never_replace_inputs() {
    let Some(_) = common::gpu() else { return };
    let f = Fixtures::new("over");
    std::fs::hard_link(f.path("x.npy"), f.path("x_link.npy")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(f.path("model.onnx"), f.path("model_link.onnx")).unwrap();
    std::fs::create_dir_all(f.path("models")).unwrap();
    std::fs::copy(f.path("model.onnx"), f.path("models/fmnist_cnn.onnx")).unwrap();
    let cases = vec![
        case("run @model.onnx --input @x.npy --output @x_link.npy", "input"),
        case("run @model.onnx --input @x.npy --output @model_link.onnx", "input"),
        case("run @model.onnx --input @x_link.npy --output @x.npy", "input"),
        case("quantize @models/fmnist_cnn.onnx --calib @x.npy --per-layer-samples 0 --out @models", "input"),
        case("quantize @model.onnx --calib @x.npy --per-layer-samples 0 --sim-outputs @x_link.npy --out ^out", "input"),
        case("run @model.onnx --input @x.npy --output /dev/null", "not a regular file"),
    ];
    assert_campaign(&f, &cases);
}

/// Seeded mutations of a model through `inspect` and `run`: typed errors or results, never a
/// panic or an abort.
#[test]
fn mutated_models_never_crash_the_binary() {
    let f = Fixtures::new("mut");
    let model = std::fs::read(common::repo("models/fmnist_cnn.onnx")).unwrap();
    let mut rng = qforge::data::rng::Rng::new(17);
    let mut crashes = Vec::new();
    for k in 0..60 {
        let mut m = model.clone();
        for _ in 0..1 + k % 5 {
            let at = rng.below(m.len() as u64) as usize;
            m[at] = rng.next_u64() as u8;
        }
        if k % 7 == 0 {
            m.truncate(rng.below(m.len() as u64) as usize);
        }
        let p = f.path(&format!("m{k}.onnx"));
        std::fs::write(&p, &m).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_qforge"))
            .args(["inspect", p.to_str().unwrap()])
            .output()
            .unwrap();
        if !matches!(out.status.code(), Some(0) | Some(1))
            || String::from_utf8_lossy(&out.stderr).contains("panicked")
        {
            crashes.push(format!(
                "mutation {k}: {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::remove_file(&p).unwrap();
    }
    assert!(crashes.is_empty(), "{}", crashes.join("\n"));
}

/// SIGINT or SIGTERM at any moment of a run leaves either every output or none: no scratch
/// folder, no temporary file, no folder the run created.
#[test]
fn an_interrupted_run_leaves_nothing_half_written() {
    let Some(_) = common::gpu() else { return };
    let f = Fixtures::new("sig");
    for (k, (signal, after_ms)) in [
        ("TERM", 300u64),
        ("INT", 1500),
        ("TERM", 3000),
        ("INT", 6000),
    ]
    .into_iter()
    .enumerate()
    {
        let out = f.path(&format!("out{k}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_qforge"))
            .args([
                "quantize",
                "model.onnx",
                "--calib",
                "x.npy",
                "--per-layer-samples",
                "0",
                "--sim-outputs",
                &format!("sim{k}.npy"),
                "--out",
                out.to_str().unwrap(),
            ])
            .current_dir(&f.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(after_ms));
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        let left: Vec<String> = std::fs::read_dir(&out)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let complete = [
            "model.onnx",
            "model.encodings",
            "model_qdq.onnx",
            "report.html",
            "split.json",
        ]
        .iter()
        .all(|n| left.iter().any(|l| l == n));
        assert!(
            left.is_empty() || (complete && left.len() == 5),
            "SIG{signal} after {after_ms} ms ({status:?}) left {left:?}"
        );
        let stray: Vec<String> = std::fs::read_dir(&f.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-") || n.starts_with(".qforge-partial"))
            .collect();
        assert!(
            stray.is_empty(),
            "SIG{signal} after {after_ms} ms left {stray:?}"
        );
    }
}
