import onnxProto from 'onnx-proto';
import type { Matrix } from '../io/matrix.js';

const { onnx } = onnxProto;

/** ONNX TensorProto data types used here. */
const FLOAT = 1;
const INT64 = 7;

/**
 * A built graph: its bytes, and what it takes as inputs fed at each run: the weight matrices
 * and the per-layer vectors (norm gains, biases). With both fed, the graphs of layers of the
 * same shape are the same bytes, and share one session (src/engine/runtime.ts).
 */
export interface Graph {
  bytes: Uint8Array;
  weights: [string, Matrix][];
  vectors: [string, Float32Array][];
}

type Dim = number | string;
type Attr = number | number[] | string | { floats: number[] };

/**
 * A small builder for ONNX graphs held in memory: add inputs, weights and nodes,
 * then serialise to the bytes an onnxruntime session is created from.
 */
export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly inits: onnxProto.onnx.ITensorProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private counter = 0;
  private readonly matrices: [string, Matrix][] = [];
  private readonly vectors: [string, Float32Array][] = [];
  /** Values renamed to graph outputs; later nodes that name the old value read the output. */
  private readonly renamed = new Map<string, string>();

  constructor(readonly name: string) {}

  private fresh(hint: string): string {
    return `${hint}_${this.counter++}`;
  }

  input(name: string, dims: Dim[], type: 'float32' | 'int64' = 'float32'): string {
    this.inputs.push(valueInfo(name, dims, type === 'float32' ? FLOAT : INT64));
    return name;
  }

  output(value: string, name: string, dims: Dim[]): void {
    // Rename the producing node's output rather than add an Identity node: an Identity is
    // a full copy of the tensor on every run.
    const producer = this.nodes.find((n) => n.output?.includes(value));
    if (producer && !this.outputs.some((o) => o.name === value)) {
      for (const n of this.nodes) {
        n.output = n.output!.map((v) => (v === value ? name : v));
        n.input = n.input!.map((v) => (v === value ? name : v));
      }
      this.renamed.set(value, name);
    } else this.nodes.push({ opType: 'Identity', input: [value], output: [name], name: this.fresh('out') });
    this.outputs.push(valueInfo(name, dims, FLOAT));
  }

  /** A float32 weight baked into the graph. */
  weight(name: string, data: Float32Array, dims: number[]): string {
    const n = dims.reduce((a, d) => a * d, 1);
    if (n !== data.length) throw new Error(`weight ${name}: ${data.length} values for dims [${dims}]`);
    this.inits.push({ name, dims, dataType: FLOAT, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
    return name;
  }

  /**
   * A weight matrix, as a float32 input of its stored shape that the model feeds at each
   * run: weights are held once, by the model, never copied into the graph.
   */
  matrix(name: string, m: Matrix): string {
    if (!this.matrices.some(([n]) => n === name)) {
      this.input(name, [m.rows, m.cols]);
      this.matrices.push([name, m]);
    }
    return name;
  }

  /** A per-layer float32 vector (a norm's gain, a bias), as an input fed at each run like the matrices. */
  vector(name: string, data: Float32Array): string {
    if (!this.vectors.some(([n]) => n === name)) {
      this.input(name, [data.length]);
      this.vectors.push([name, data]);
    }
    return name;
  }

  /** x [N, in] through a linear map stored as `m` (whatever its layout), plus a bias: one Gemm. */
  linear(x: string, w: string, m: Matrix, b?: string | null): string {
    return this.op('Gemm', [x, w, ...(b ? [b] : [])], { transB: m.layout === 'out_in' ? 1 : 0, alpha: 1.0, beta: 1.0 });
  }

  /** x [N, out] through the transpose of the map stored as `m`: x Wᵀ-of-the-map, [N, in]. */
  linearT(x: string, w: string, m: Matrix): string {
    return this.op('Gemm', [x, w], { transB: m.layout === 'out_in' ? 0 : 1, alpha: 1.0, beta: 1.0 });
  }

  /** A float32 scalar (or vector) constant. */
  scalar(value: number | number[]): string {
    const vals = typeof value === 'number' ? [value] : value;
    const name = this.fresh('c');
    this.inits.push({ name, dims: typeof value === 'number' ? [] : [vals.length], dataType: FLOAT, rawData: new Uint8Array(new Float32Array(vals).buffer) });
    return name;
  }

  /** An int64 vector constant (shapes, axes, slice bounds). */
  ints(values: number[]): string {
    const name = this.fresh('i');
    this.inits.push({ name, dims: [values.length], dataType: INT64, rawData: new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer) });
    return name;
  }

  op(type: string, inputs: string[], attrs: Record<string, Attr> = {}): string {
    return this.opN(type, inputs, 1, attrs)[0];
  }

  opN(type: string, inputs: string[], nOut: number, attrs: Record<string, Attr> = {}): string[] {
    const out = Array.from({ length: nOut }, () => this.fresh(type.toLowerCase()));
    this.nodes.push({ opType: type, input: inputs.map((v) => this.renamed.get(v) ?? v), output: out, name: this.fresh(`n_${type}`), attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)) });
    return out;
  }

  // Common compositions.
  matmul(x: string, w: string, b?: string | null): string {
    const y = this.op('MatMul', [x, w]);
    return b ? this.op('Add', [y, b]) : y;
  }

  slice(x: string, start: number, end: number, axis: number): string {
    return this.op('Slice', [x, this.ints([start]), this.ints([end]), this.ints([axis])]);
  }

  reshape(x: string, shape: number[]): string {
    return this.op('Reshape', [x, this.ints(shape)]);
  }

  build(opset = 20): Graph {
    return { bytes: this.toBytes(opset), weights: this.matrices, vectors: this.vectors };
  }

  toBytes(opset = 17): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'hydra',
      opsetImport: [{ domain: '', version: opset }],
      graph: onnx.GraphProto.create({ name: this.name, node: this.nodes, initializer: this.inits, input: this.inputs, output: this.outputs }),
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function valueInfo(name: string, dims: Dim[], elemType: number): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

function attribute(name: string, v: Attr): onnxProto.onnx.IAttributeProto {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof v === 'string') return { name, type: A.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: A.INTS, ints: v };
  if (typeof v === 'object') return { name, type: A.FLOATS, floats: v.floats };
  return Number.isInteger(v) && !FLOAT_ATTRS.has(name) ? { name, type: A.INT, i: v } : { name, type: A.FLOAT, f: v };
}

/** Attributes that are floats even when given an integral value. */
const FLOAT_ATTRS = new Set(['epsilon', 'alpha', 'beta', 'value_float', 'scale']);
