//! ONNX Runtime custom operator `ai.deposium:GatherQ`: token-table lookup from a bit-packed table of any width
//! (deposium_convert's `packed_table`; GatherBlockQuantized offers 4 or 8 bits only).
//!
//! Inputs: data u8 (rows of `dim` codes, `bits` each, little-endian bit order, each row padded to whole bytes, 3
//! trailing bytes), ids i64 `[...]`, scales u16 `[V, dim/block]` (fp16 bits), zero points u8 `[V, dim/block]`.
//! Attributes: bits, block_size, dim. Output: f32 `[..., dim]`, `(code − zero_point) · scale`.
//!
//! `ai.deposium:GatherCoded`: lookup from an entropy-coded table (deposium_convert's `coded_table`). Inputs: coded
//! rows u8, ids i64, row offsets u32 `[V + 1]`, row steps u16 `[V]` (fp16 bits), column scales and means f32
//! `[dim]`, Huffman code lengths u8 (a constant). Attributes: dim, min_code. Output: f32 `[..., dim]`,
//! `(q · row_step) · col_scale + col_mean`.
use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

use super::par::{err, par_for, par_rows};
use deposium_kernels::huffman::{Decoder, READ_PADDING};
use deposium_kernels::OutPtr as Out;

pub struct GatherQ;

pub struct GatherQKernel {
    bits: usize,
    block: usize,
    dim: usize,
}

/// Row `row` of a packed table: `out[j] = (code_j − zp) · scale` per block.
fn unpack_row(data: &[u8], scales: &[u16], zps: &[u8], row: usize, bits: usize, block: usize, out: &mut [f32]) {
    let dim = out.len();
    let (row_bytes, kb, mask) = ((dim * bits).div_ceil(8), dim.div_ceil(block), (1u32 << bits) - 1);
    let base = row * row_bytes;
    for (b, chunk) in out.chunks_mut(block).enumerate() {
        let scale = deposium_kernels::f16_value(scales[row * kb + b]);
        let zp = zps[row * kb + b] as f32;
        for (j, o) in chunk.iter_mut().enumerate() {
            let bit = (b * block + j) * bits;
            let p = base + bit / 8;
            let word = u32::from_le_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]);
            *o = (((word >> (bit % 8)) & mask) as f32 - zp) * scale;
        }
    }
}

impl Kernel for GatherQKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize| ctx.input(i)?.ok_or_else(|| err(format!("GatherQ: input {i} missing")));
        let (data, ids, scales, zps) = (input(0)?, input(1)?, input(2)?, input(3)?);
        let (_, data) = data.try_extract_tensor::<u8>()?;
        let (id_shape, ids) = ids.try_extract_tensor::<i64>()?;
        let (_, scales) = scales.try_extract_tensor::<u16>()?;
        let (_, zps) = zps.try_extract_tensor::<u8>()?;
        let (bits, block, dim) = (self.bits, self.block, self.dim);
        let kb = dim.div_ceil(block);
        let vocab = scales.len() / kb;
        if zps.len() != scales.len() || data.len() != vocab * (dim * bits).div_ceil(8) + 3 {
            return Err(err(format!(
                "GatherQ: {} bytes, {} scales, {} zero points for {dim} × {bits}-bit rows",
                data.len(),
                scales.len(),
                zps.len()
            )));
        }
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= vocab) {
            return Err(err(format!("GatherQ: token id {bad} is outside the table ({vocab} rows)")));
        }
        let mut shape = id_shape.to_vec();
        shape.push(dim as i64);
        let mut y = ctx.output(0, shape)?.ok_or_else(|| err("GatherQ: output missing"))?;
        let out = Out(y.try_extract_tensor_mut::<f32>()?.1.as_mut_ptr());
        par_rows(ctx, ids.len(), &|rows| {
            for r in rows {
                // SAFETY: each id writes only its own `dim` values of the output, allocated above.
                let o = unsafe { std::slice::from_raw_parts_mut(out.get().add(r * dim), dim) };
                unpack_row(data, scales, zps, ids[r] as usize, bits, block, o);
            }
        });
        Ok(())
    }
}

impl Operator for GatherQ {
    type Kernel<'attr> = GatherQKernel;

    fn name(&self) -> &str {
        deposium_convert::GATHER_Q
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Uint8),
            OperatorInput::required(TensorElementType::Int64),
            OperatorInput::required(TensorElementType::Uint16),
            OperatorInput::required(TensorElementType::Uint8),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let attr = |name: &str| {
            kctx.get::<i64>(name)
                .filter(|&v| v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| err(format!("GatherQ: attribute {name} missing")))
        };
        let (bits, block, dim) = (attr("bits")?, attr("block_size")?, attr("dim")?);
        if !(1..=8).contains(&bits) {
            return Err(err(format!("GatherQ: {bits}-bit codes are not supported (1 to 8)")));
        }
        Ok(GatherQKernel { bits, block, dim })
    }
}

pub struct GatherCoded;

pub struct GatherCodedKernel {
    dim: usize,
    min_code: i32,
    decoder: Decoder,
    /// Address and length of the offsets last checked (initializers: checked once, not at every run).
    checked: Option<(usize, usize)>,
}

impl Kernel for GatherCodedKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let input = |i: usize| ctx.input(i)?.ok_or_else(|| err(format!("GatherCoded: input {i} missing")));
        let (data, ids, offsets, steps, col_scale, col_mean) =
            (input(0)?, input(1)?, input(2)?, input(3)?, input(4)?, input(5)?);
        let (_, data) = data.try_extract_tensor::<u8>()?;
        let (id_shape, ids) = ids.try_extract_tensor::<i64>()?;
        let (_, offsets) = offsets.try_extract_tensor::<u32>()?;
        let (_, steps) = steps.try_extract_tensor::<u16>()?;
        let (_, col_scale) = col_scale.try_extract_tensor::<f32>()?;
        let (_, col_mean) = col_mean.try_extract_tensor::<f32>()?;
        let dim = self.dim;
        let vocab = steps.len();
        let key = (offsets.as_ptr() as usize, offsets.len());
        let bad_offsets = self.checked != Some(key)
            && (offsets.len() != vocab + 1
                || offsets.windows(2).any(|w| w[0] > w[1])
                || offsets.last().is_some_and(|&end| end as usize + READ_PADDING > data.len()));
        if bad_offsets || col_scale.len() != dim || col_mean.len() != dim {
            return Err(err(format!(
                "GatherCoded: {} offsets, {} row steps, {} column scales and {} means for a {dim}-wide table of {} bytes",
                offsets.len(),
                vocab,
                col_scale.len(),
                col_mean.len(),
                data.len()
            )));
        }
        self.checked = Some(key);
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= vocab) {
            return Err(err(format!("GatherCoded: token id {bad} is outside the table ({vocab} rows)")));
        }
        let mut shape = id_shape.to_vec();
        shape.push(dim as i64);
        let mut y = ctx.output(0, shape)?.ok_or_else(|| err("GatherCoded: output missing"))?;
        let out = Out(y.try_extract_tensor_mut::<f32>()?.1.as_mut_ptr());
        let (decoder, min_code) = (&self.decoder, self.min_code);
        // A coded row takes ~3 µs to decode: tasks of a few rows spread even one text's lookups over the threads.
        const ROWS: usize = 4;
        par_for(ctx, ids.len().div_ceil(ROWS), &|task| {
            for (r, &id) in ids.iter().enumerate().skip(task * ROWS).take(ROWS) {
                let id = id as usize;
                let step = deposium_kernels::f16_value(steps[id]);
                // SAFETY: each id writes only its own `dim` values of the output, allocated above.
                let o = unsafe { std::slice::from_raw_parts_mut(out.get().add(r * dim), dim) };
                decoder.decode_scaled(data, offsets[id] as usize, min_code, step, col_scale, col_mean, o);
            }
        });
        Ok(())
    }
}

impl Operator for GatherCoded {
    type Kernel<'attr> = GatherCodedKernel;

    fn name(&self) -> &str {
        deposium_convert::GATHER_CODED
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Uint8),
            OperatorInput::required(TensorElementType::Int64),
            OperatorInput::required(TensorElementType::Uint32),
            OperatorInput::required(TensorElementType::Uint16),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Uint8),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let dim = kctx.get::<i64>("dim").filter(|&v| v > 0).ok_or_else(|| err("GatherCoded: attribute dim missing"))?
            as usize;
        let min_code = kctx.get::<i64>("min_code").ok_or_else(|| err("GatherCoded: attribute min_code missing"))?;
        let lengths = kctx.constant_input::<ort::value::DynTensorValueType>(6)?;
        let (_, lengths) = lengths.try_extract_tensor::<u8>()?;
        let decoder = Decoder::new(lengths).map_err(|e| err(format!("GatherCoded: code lengths: {e}")))?;
        let min_code = i32::try_from(min_code).map_err(|_| err("GatherCoded: min_code out of range"))?;
        Ok(GatherCodedKernel { dim, min_code, decoder, checked: None })
    }
}
