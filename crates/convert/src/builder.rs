//! Graph builder: names values, collects nodes and initializers.
use crate::proto::*;

pub const MS: &str = "com.microsoft";
/// Our own operators (deposium-engine registers them; stock ONNX Runtime does not know them).
pub const CUSTOM_DOMAIN: &str = "ai.deposium";
pub const QMATMUL8: &str = "QMatMul8";
pub const QMATMUL4: &str = "QMatMul4";
pub const GEMMA_NORM_ADD_NORM: &str = "GemmaNormAddNorm";
pub const GEMMA_ATTENTION: &str = "GemmaAttention";
pub const GATHER_Q: &str = "GatherQ";
pub const GATHER_CODED: &str = "GatherCoded";
pub const MEAN_POOL: &str = "MeanPool";

#[derive(Default)]
pub struct Builder {
    pub model: ModelProto,
    counter: usize,
}

impl Builder {
    pub fn new(name: &str) -> Self {
        let mut b = Builder::default();
        b.model.graph_name = name.into();
        b.model.opsets = vec![("".into(), 21), (MS.into(), 1)];
        b
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Add a node with `n_out` outputs in `domain`; returns output names.
    pub fn node(&mut self, domain: &str, op: &str, inputs: &[&str], n_out: usize, attrs: Vec<Attr>) -> Vec<String> {
        let name = self.fresh(op);
        let outputs: Vec<String> = (0..n_out).map(|i| format!("{name}_o{i}")).collect();
        if !domain.is_empty() && !self.model.opsets.iter().any(|(d, _)| d == domain) {
            self.model.opsets.push((domain.into(), 1));
        }
        self.model.nodes.push(Node {
            op_type: op.into(),
            domain: domain.into(),
            name,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.clone(),
            attrs,
        });
        outputs
    }

    /// A single-output ONNX-domain op.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        self.node("", op, inputs, 1, attrs).remove(0)
    }

    /// A single-output com.microsoft op.
    pub fn ms(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        self.node(MS, op, inputs, 1, attrs).remove(0)
    }

    pub fn init(&mut self, name: &str, dtype: DType, dims: &[i64], raw: Vec<u8>) -> String {
        let expect: i64 = dims.iter().product();
        let bits = match dtype {
            DType::F32 | DType::I32 | DType::U32 => 32,
            DType::I64 => 64,
            DType::F16 | DType::U16 => 16,
            DType::U8 | DType::I8 | DType::Bool => 8,
            DType::U4 | DType::I4 => 4,
        };
        assert_eq!(raw.len() as i64 * 8, (expect * bits + 7) / 8 * 8, "initializer {name}: size mismatch");
        let name =
            if self.model.initializers.iter().any(|t| t.name == name) { self.fresh(name) } else { name.to_string() };
        self.model.initializers.push(Tensor { name: name.clone(), dtype, dims: dims.to_vec(), raw });
        name
    }

    pub fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        self.init(name, DType::F32, dims, data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    pub fn const_i64(&mut self, vals: &[i64]) -> String {
        let name = self.fresh("c_i64");
        self.init(&name, DType::I64, &[vals.len() as i64], vals.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    pub fn scalar_i64(&mut self, v: i64) -> String {
        let name = self.fresh("s_i64");
        self.init(&name, DType::I64, &[], v.to_le_bytes().to_vec())
    }

    pub fn scalar_f32(&mut self, v: f32) -> String {
        let name = self.fresh("s_f32");
        self.init(&name, DType::F32, &[], v.to_le_bytes().to_vec())
    }

    pub fn input(&mut self, name: &str, dtype: DType, shape: Vec<Dim>) -> String {
        self.model.inputs.push(ValueInfo { name: name.into(), dtype, shape });
        name.into()
    }

    /// Expose `value` as graph output `name`.
    pub fn output(&mut self, value: &str, name: &str, dtype: DType, shape: Vec<Dim>) {
        self.op_named("Identity", &[value], name);
        self.model.outputs.push(ValueInfo { name: name.into(), dtype, shape });
    }

    fn op_named(&mut self, op: &str, inputs: &[&str], out: &str) {
        let name = self.fresh(op);
        self.model.nodes.push(Node {
            op_type: op.into(),
            domain: String::new(),
            name,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.into()],
            attrs: vec![],
        });
    }

    // ---- common helpers ----

    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.const_i64(shape);
        self.op("Reshape", &[x, &s], vec![])
    }

    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], vec![attr_ints("perm", perm)])
    }

    pub fn unsqueeze(&mut self, x: &str, axes: &[i64]) -> String {
        let a = self.const_i64(axes);
        self.op("Unsqueeze", &[x, &a], vec![])
    }

    pub fn cast(&mut self, x: &str, to: DType) -> String {
        self.op("Cast", &[x], vec![attr_i("to", to as i64)])
    }
}

pub fn sym(s: &str) -> Dim {
    Dim::Sym(s.into())
}
pub fn fixed(n: i64) -> Dim {
    Dim::Fixed(n)
}
