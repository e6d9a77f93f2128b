//! The token-table lookups the graph builder emits (GatherBlockQuantized: 8-bit, 4-bit asymmetric with fp16 scales,
//! and mixed tables with id ranges at 8 bits; our bit-packed GatherQ: 6-bit; our entropy-coded GatherCoded), run by
//! ONNX Runtime on a small random table and compared with the rows dequantized in Rust.
use deposium_convert::blocks::{quantize_blocks, quantize_blocks_asym4, quantize_row_asym};
use deposium_convert::builder::{sym, Builder};
use deposium_convert::coded_table::Columns;
use deposium_convert::emit::embedding;
use deposium_convert::proto::DType;
use deposium_convert::QuantConfig;
use ort::session::Session;
use ort::value::Tensor;

const VOCAB: usize = 700;
const DIM: usize = 64;

fn table() -> Vec<f32> {
    // Deterministic pseudo-random values with a few outliers.
    let mut rng = deposium_test_support::Rng::new(1);
    (0..VOCAB * DIM)
        .map(|i| {
            let u = rng.centered();
            if i % 97 == 0 {
                u * 8.0
            } else {
                u
            }
        })
        .collect()
}

/// Rows of `t` as a `[rows, DIM]` lookup through the graph for `q`.
fn lookup(t: &[f32], q: &QuantConfig, ids: &[i64], scale: f32) -> Vec<Vec<f32>> {
    let env = deposium_engine::runtime::init_ort().expect("ONNX Runtime (scripts/fetch.sh ort)");
    let mut b = Builder::new("table");
    let x = b.input("input_ids", DType::I64, vec![sym("batch"), sym("sequence")]);
    let e = embedding(&mut b, &x, "embed_tokens", t, VOCAB, DIM, scale, q);
    b.output(&e, "out", DType::F32, vec![sym("batch"), sym("sequence"), deposium_convert::builder::fixed(DIM as i64)]);
    let dir = std::env::temp_dir().join(format!("deposium-table-{}-{}", std::process::id(), ids.len()));
    b.model.write_dir(&dir).unwrap();
    let ops = deposium_engine::runtime::operator_domain().unwrap();
    let mut s =
        Session::builder(env).unwrap().with_operators(ops).unwrap().commit_from_file(dir.join("model.onnx")).unwrap();
    let input = Tensor::from_array(([1i64, ids.len() as i64], ids.to_vec())).unwrap();
    let out = s.run(ort::inputs!["input_ids" => input]).unwrap();
    let (_, data) = out["out"].try_extract_tensor::<f32>().unwrap();
    let rows = data.chunks(DIM).map(|c| c.to_vec()).collect();
    std::fs::remove_dir_all(&dir).ok();
    rows
}

fn dequant8(t: &[f32], id: usize, block: usize) -> Vec<f32> {
    let (c, s) = quantize_blocks(&t[id * DIM..(id + 1) * DIM], 1, DIM, block, 8);
    c.iter().enumerate().map(|(j, &q)| (q as f32 - 128.0) * s[j / block]).collect()
}

fn dequant4_asym(t: &[f32], id: usize, block: usize) -> Vec<f32> {
    let (c, s, z) = quantize_blocks_asym4(&t[id * DIM..(id + 1) * DIM], 1, DIM, block);
    c.iter().enumerate().map(|(j, &q)| (q as f32 - z[j / block] as f32) * s[j / block]).collect()
}

fn f16_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// `‖got − row · scale‖ / ‖row · scale‖`.
fn relative_error(got: &[f32], row: &[f32], scale: f32) -> f32 {
    let err = got.iter().zip(row).map(|(g, x)| (g - x * scale).powi(2)).sum::<f32>().sqrt();
    err / row.iter().map(|x| (x * scale).powi(2)).sum::<f32>().sqrt()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}: component {j}: got {g}, want {w}");
    }
}

#[test]
fn mixed_table_serves_hot_ids_at_8_bits_and_the_rest_at_4_bits() {
    let t = table();
    let mut q = QuantConfig::from_scheme("int8").unwrap();
    (q.embed_bits, q.embed_step) = (Some(4), None);
    q.embed_block = 32;
    q.embed_asymmetric = true;
    q.embed_scales_f16 = false;
    // Overlapping, unsorted and out-of-vocabulary ranges are merged and clipped.
    q.embed_int8_ids = vec![[600, 650], [0, 100], [90, 120], [690, 5000]];
    let hot = |i: usize| i < 120 || (600..650).contains(&i) || i >= 690;
    let ids: Vec<i64> = vec![0, 1, 99, 100, 119, 120, 121, 300, 599, 600, 649, 650, 689, 690, 699, 5, 650];
    let scale = 3.0;
    let got = lookup(&t, &q, &ids, scale);
    for (r, &id) in got.iter().zip(&ids) {
        let id = id as usize;
        let want: Vec<f32> =
            if hot(id) { dequant8(&t, id, 128) } else { dequant4_asym(&t, id, 32) }.iter().map(|x| x * scale).collect();
        assert_close(r, &want, 1e-5, &format!("id {id} (hot: {})", hot(id)));
    }
}

#[test]
fn fp16_scales_round_only_the_scales() {
    let t = table();
    let mut q = QuantConfig::from_scheme("int8").unwrap();
    (q.embed_bits, q.embed_block, q.embed_scales_f16, q.embed_step) = (Some(8), 128, true, None);
    let ids: Vec<i64> = vec![3, 0, 699, 3];
    let got = lookup(&t, &q, &ids, 2.0);
    for (r, &id) in got.iter().zip(&ids) {
        let (c, s) = quantize_blocks(&t[id as usize * DIM..(id as usize + 1) * DIM], 1, DIM, 128, 8);
        let want: Vec<f32> = c.iter().map(|&q| f16_round((q as f32 - 128.0) * f16_round(s[0] * 2.0))).collect();
        assert_close(r, &want, 1e-6, &format!("id {id}"));
    }
}

#[test]
fn six_bit_packed_table_matches_its_dequantized_rows() {
    let t = table();
    for block in [32, 64] {
        let mut q = QuantConfig::from_scheme("int8").unwrap();
        (q.embed_bits, q.embed_block, q.embed_step) = (Some(6), block, None);
        let ids: Vec<i64> = vec![0, 1, 5, 699, 350, 5];
        let scale = 3.0;
        let got = lookup(&t, &q, &ids, scale);
        for (r, &id) in got.iter().zip(&ids) {
            let row = &t[id as usize * DIM..(id as usize + 1) * DIM];
            let (c, s, z) = quantize_row_asym(row, 6, block, scale);
            assert!(c.iter().all(|&c| c < 64), "6-bit codes");
            let want: Vec<f32> =
                c.iter().enumerate().map(|(j, &c)| (c as f32 - z[j / block] as f32) * s[j / block]).collect();
            assert_close(r, &want, 1e-6, &format!("id {id}, block {block}"));
            // And close to the fp32 row (the blocks holding the table's ×8 outliers have 8× coarser steps).
            assert!(relative_error(r, row, scale) < 0.05, "id {id}: relative error {}", relative_error(r, row, scale));
        }
    }
}

#[test]
fn entropy_coded_table_matches_its_dequantized_rows() {
    let t = table();
    let q = QuantConfig::from_scheme("int8").unwrap();
    let step = q.embed_step.expect("int8 codes its table");
    let ids: Vec<i64> = vec![0, 1, 5, 699, 350, 5, 698, 0];
    let scale = 3.0;
    let got = lookup(&t, &q, &ids, scale);
    let coded = deposium_convert::coded_table::encode(&t, VOCAB, DIM, step, scale, true);
    assert!(coded.bits_per_value() < 8.0, "{} bits per value", coded.bits_per_value());
    for (r, &id) in got.iter().zip(&ids) {
        assert_close(r, &coded.dequantized_row(id as usize), 1e-6, &format!("id {id}"));
        let row = &t[id as usize * DIM..(id as usize + 1) * DIM];
        assert!(relative_error(r, row, scale) < 0.05, "id {id}: relative error {}", relative_error(r, row, scale));
    }
}

/// `embed_fine_ids` rows (w8a16's frequent tokens) are coded at `embed_fine_step`: the lookup returns the rows the
/// encoder made with that step, and their error is about the steps' ratio smaller than the other rows'.
#[test]
fn entropy_coded_table_codes_fine_rows_at_their_step() {
    let t = table();
    let mut q = QuantConfig::from_scheme("w8a16").unwrap();
    let (step, fine_step) = (q.embed_step.unwrap(), q.embed_fine_step.unwrap());
    q.embed_fine_ids = vec![[100, 300], [650, 2000]];
    let fine = |id: usize| (100..300).contains(&id) || id >= 650;
    let ids: Vec<i64> = (0..VOCAB as i64).collect();
    let scale = 3.0;
    let got = lookup(&t, &q, &ids, scale);
    let steps = |r: usize| if fine(r) { fine_step } else { step };
    let coded = deposium_convert::coded_table::encode_steps(&t, VOCAB, DIM, &steps, Columns::Uniform, scale, true);
    let (mut err_fine, mut err_rest) = (vec![], vec![]);
    for (id, r) in got.iter().enumerate() {
        assert_close(r, &coded.dequantized_row(id), 1e-6, &format!("id {id}"));
        let e = relative_error(r, &t[id * DIM..(id + 1) * DIM], scale);
        if fine(id) {
            err_fine.push(e)
        } else {
            err_rest.push(e)
        }
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let ratio = mean(&err_fine) / mean(&err_rest);
    let want = fine_step / step;
    assert!((ratio - want).abs() < 0.15 * want, "error ratio {ratio}, steps' ratio {want}");
}

/// `embed_uniform_columns` (w8a16): every column comes back with the same absolute error, where standardized columns
/// (int8) err in proportion to their spread; the lookup returns the encoder's rows either way.
#[test]
fn entropy_coded_table_spreads_the_error_as_its_columns_say() {
    let spread = |j: usize| 1.0 + j as f32 / 8.0;
    let t: Vec<f32> = table().iter().enumerate().map(|(i, x)| x * spread(i % DIM)).collect();
    let ids: Vec<i64> = (0..VOCAB as i64).collect();
    for (uniform, columns) in [(false, Columns::Standardized), (true, Columns::Uniform)] {
        let mut q = QuantConfig::from_scheme("int8").unwrap();
        q.embed_uniform_columns = uniform;
        let got = lookup(&t, &q, &ids, 1.0);
        let step = q.embed_step.unwrap();
        let coded = deposium_convert::coded_table::encode_steps(&t, VOCAB, DIM, &|_| step, columns, 1.0, true);
        let mut sq = vec![0f64; DIM];
        for (id, r) in got.iter().enumerate() {
            assert_close(r, &coded.dequantized_row(id), 1e-6, &format!("{columns:?} id {id}"));
            for (j, (a, b)) in r.iter().zip(&t[id * DIM..(id + 1) * DIM]).enumerate() {
                sq[j] += ((a - b) as f64).powi(2);
            }
        }
        // RMS error of the widest column over the narrowest's (spreads 8.9 : 1).
        let ratio = (sq[DIM - 1] / sq[0]).sqrt() as f32;
        let want = if uniform { 1.0 } else { spread(DIM - 1) / spread(0) };
        assert!((ratio - want).abs() < 0.2 * want, "{columns:?}: column error ratio {ratio}, want {want}");
    }
}

#[test]
fn portable_graphs_store_the_coded_table_at_8_bits() {
    let t = table();
    let mut q = QuantConfig::from_scheme("int8").unwrap();
    q.custom_kernel = false;
    let ids: Vec<i64> = vec![3, 600];
    for (r, &id) in lookup(&t, &q, &ids, 1.0).iter().zip(&ids) {
        let (c, s) = quantize_blocks(&t[id as usize * DIM..(id as usize + 1) * DIM], 1, DIM, q.embed_block, 8);
        let want: Vec<f32> =
            c.iter().enumerate().map(|(j, &v)| (v as f32 - 128.0) * f16_round(s[j / q.embed_block])).collect();
        assert_close(r, &want, 1e-3, &format!("id {id}"));
    }
}
