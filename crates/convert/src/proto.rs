//! A minimal ONNX protobuf writer: just the messages a graph builder needs (ModelProto, GraphProto, NodeProto,
//! TensorProto with raw or external data, ValueInfoProto). Field numbers follow onnx/onnx.proto.
use std::io::Write;
use std::path::Path;

/// ONNX TensorProto.DataType values we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum DType {
    F32 = 1,
    U8 = 2,
    I8 = 3,
    U16 = 4,
    U32 = 12,
    I32 = 6,
    I64 = 7,
    Bool = 9,
    F16 = 10,
    U4 = 21,
    I4 = 22,
}

#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<i64>,
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum AttrValue {
    Float(f32),
    Int(i64),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Tensor(Tensor),
}

#[derive(Debug, Clone)]
pub struct Attr {
    pub name: String,
    pub value: AttrValue,
}

pub fn attr_i(name: &str, v: i64) -> Attr {
    Attr { name: name.into(), value: AttrValue::Int(v) }
}
pub fn attr_f(name: &str, v: f32) -> Attr {
    Attr { name: name.into(), value: AttrValue::Float(v) }
}
pub fn attr_s(name: &str, v: &str) -> Attr {
    Attr { name: name.into(), value: AttrValue::Str(v.into()) }
}
pub fn attr_ints(name: &str, v: &[i64]) -> Attr {
    Attr { name: name.into(), value: AttrValue::Ints(v.to_vec()) }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub op_type: String,
    pub domain: String,
    pub name: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<Attr>,
}

/// A graph input/output: name, element type, shape (a dim is a number or a symbolic name).
#[derive(Debug, Clone)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

#[derive(Debug, Clone)]
pub enum Dim {
    Fixed(i64),
    Sym(String),
}

#[derive(Debug, Clone, Default)]
pub struct ModelProto {
    pub nodes: Vec<Node>,
    pub initializers: Vec<Tensor>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// (domain, version)
    pub opsets: Vec<(String, i64)>,
    pub metadata: Vec<(String, String)>,
    pub graph_name: String,
}

// ---- wire format ----

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, ((field as u64) << 3) | wire as u64);
}

fn int_field(out: &mut Vec<u8>, field: u32, v: i64) {
    tag(out, field, 0);
    varint(out, v as u64);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn float_field(out: &mut Vec<u8>, field: u32, v: f32) {
    tag(out, field, 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn msg_field(out: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    f(&mut inner);
    bytes_field(out, field, &inner);
}

/// Where tensor bytes go: inline (`raw_data`) or appended to an external data file.
pub struct External<'a> {
    pub file_name: String,
    pub writer: &'a mut dyn Write,
    pub offset: u64,
    /// Tensors at least this large go external.
    pub threshold: usize,
}

fn encode_tensor(out: &mut Vec<u8>, t: &Tensor, ext: &mut Option<External<'_>>) -> std::io::Result<()> {
    for &d in &t.dims {
        int_field(out, 1, d);
    }
    int_field(out, 2, t.dtype as i64);
    bytes_field(out, 8, t.name.as_bytes());
    match ext {
        Some(e) if t.raw.len() >= e.threshold => {
            // Align each tensor to 64 bytes so ORT can mmap it.
            let pad = (64 - (e.offset % 64)) % 64;
            e.writer.write_all(&vec![0u8; pad as usize])?;
            e.offset += pad;
            e.writer.write_all(&t.raw)?;
            for (k, v) in [
                ("location", e.file_name.clone()),
                ("offset", e.offset.to_string()),
                ("length", t.raw.len().to_string()),
            ] {
                msg_field(out, 13, |m| {
                    bytes_field(m, 1, k.as_bytes());
                    bytes_field(m, 2, v.as_bytes());
                });
            }
            int_field(out, 14, 1);
            e.offset += t.raw.len() as u64;
        }
        _ => bytes_field(out, 9, &t.raw),
    }
    Ok(())
}

fn encode_attr(out: &mut Vec<u8>, a: &Attr) -> std::io::Result<()> {
    bytes_field(out, 1, a.name.as_bytes());
    match &a.value {
        AttrValue::Float(f) => {
            float_field(out, 2, *f);
            int_field(out, 20, 1);
        }
        AttrValue::Int(i) => {
            int_field(out, 3, *i);
            int_field(out, 20, 2);
        }
        AttrValue::Str(s) => {
            bytes_field(out, 4, s.as_bytes());
            int_field(out, 20, 3);
        }
        AttrValue::Tensor(t) => {
            let mut inner = Vec::new();
            encode_tensor(&mut inner, t, &mut None)?;
            bytes_field(out, 5, &inner);
            int_field(out, 20, 4);
        }
        AttrValue::Floats(v) => {
            for f in v {
                float_field(out, 7, *f);
            }
            int_field(out, 20, 6);
        }
        AttrValue::Ints(v) => {
            for i in v {
                int_field(out, 8, *i);
            }
            int_field(out, 20, 7);
        }
    }
    Ok(())
}

fn encode_value_info(out: &mut Vec<u8>, v: &ValueInfo) {
    bytes_field(out, 1, v.name.as_bytes());
    msg_field(out, 2, |ty| {
        msg_field(ty, 1, |tt| {
            int_field(tt, 1, v.dtype as i64);
            msg_field(tt, 2, |sh| {
                for d in &v.shape {
                    msg_field(sh, 1, |dm| match d {
                        Dim::Fixed(n) => int_field(dm, 1, *n),
                        Dim::Sym(s) => bytes_field(dm, 2, s.as_bytes()),
                    });
                }
            });
        });
    });
}

impl ModelProto {
    /// Serialize; tensors at least `threshold` bytes go to `ext` when given.
    pub fn encode(&self, mut ext: Option<External<'_>>) -> std::io::Result<Vec<u8>> {
        let mut graph = Vec::new();
        for n in &self.nodes {
            let mut m = Vec::new();
            for i in &n.inputs {
                bytes_field(&mut m, 1, i.as_bytes());
            }
            for o in &n.outputs {
                bytes_field(&mut m, 2, o.as_bytes());
            }
            bytes_field(&mut m, 3, n.name.as_bytes());
            bytes_field(&mut m, 4, n.op_type.as_bytes());
            for a in &n.attrs {
                let mut am = Vec::new();
                encode_attr(&mut am, a)?;
                bytes_field(&mut m, 5, &am);
            }
            if !n.domain.is_empty() {
                bytes_field(&mut m, 7, n.domain.as_bytes());
            }
            bytes_field(&mut graph, 1, &m);
        }
        bytes_field(&mut graph, 2, self.graph_name.as_bytes());
        for t in &self.initializers {
            let mut m = Vec::new();
            encode_tensor(&mut m, t, &mut ext)?;
            bytes_field(&mut graph, 5, &m);
        }
        for v in &self.inputs {
            msg_field(&mut graph, 11, |m| encode_value_info(m, v));
        }
        for v in &self.outputs {
            msg_field(&mut graph, 12, |m| encode_value_info(m, v));
        }
        let mut model = Vec::new();
        int_field(&mut model, 1, 10); // ir_version
        bytes_field(&mut model, 2, b"deposium-embed");
        bytes_field(&mut model, 3, env!("CARGO_PKG_VERSION").as_bytes());
        int_field(&mut model, 5, 1);
        bytes_field(&mut model, 7, &graph);
        for (d, v) in &self.opsets {
            msg_field(&mut model, 8, |m| {
                bytes_field(m, 1, d.as_bytes());
                int_field(m, 2, *v);
            });
        }
        for (k, v) in &self.metadata {
            msg_field(&mut model, 14, |m| {
                bytes_field(m, 1, k.as_bytes());
                bytes_field(m, 2, v.as_bytes());
            });
        }
        Ok(model)
    }

    /// Write `dir/model.onnx` and, for large tensors, `dir/model.onnx_data`.
    pub fn write_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let data_name = "model.onnx_data";
        let mut data = std::io::BufWriter::new(std::fs::File::create(dir.join(data_name))?);
        let bytes =
            self.encode(Some(External { file_name: data_name.into(), writer: &mut data, offset: 0, threshold: 1024 }))?;
        data.flush()?;
        std::fs::write(dir.join("model.onnx"), bytes)
    }
}
