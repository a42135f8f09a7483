import { archDefaults, type ArchSpec, type LayerWeights } from '../engine/spec.js';
import type { WeightStore } from '../io/safetensors.js';
import { activationOf, bool, linear, NO_EXTRA_NORMS, normWeights, num, optNum, ropeScaling, sameLayers, type Family, type HfConfig } from './family.js';

/**
 * GPT-NeoX / Pythia: LayerNorm, partial rotary, fused query_key_value interleaved per
 * head as [H, 3, dh], and parallel (attention and MLP read the same residual) or
 * sequential residual.
 */
export const gptNeox: Family = {
  modelTypes: ['gpt_neox'],

  arch(config: HfConfig): ArchSpec {
    const d = num(config, 'hidden_size');
    const nHeads = num(config, 'num_attention_heads');
    const dHead = d / nHeads;
    const pct = optNum(config, 'partial_rotary_factor') ?? optNum(config, 'rotary_pct') ?? 1;
    const rope = { dim: Math.floor(dHead * pct), theta: optNum(config, 'rope_theta') ?? optNum(config, 'rotary_emb_base') ?? 10000, style: 'half' as const, scaling: ropeScaling(config) };
    return {
      ...archDefaults(dHead),
      family: 'gpt_neox',
      dModel: d,
      nLayers: num(config, 'num_hidden_layers'),
      nHeads,
      nKvHeads: nHeads,
      dHead,
      dMlp: num(config, 'intermediate_size'),
      vocab: num(config, 'vocab_size'),
      nCtx: num(config, 'max_position_embeddings'),
      norm: 'layernorm',
      normEps: num(config, 'layer_norm_eps'),
      positions: 'rotary',
      layers: sameLayers(num(config, 'num_hidden_layers'), null, rope),
      act: activationOf(config.hidden_act ?? 'gelu', config._path),
      gated: false,
      parallel: bool(config, 'use_parallel_residual', true),
    };
  },

  weights(store: WeightStore, spec: ArchSpec) {
    const { dModel: d, dMlp: f, vocab: V, nHeads: H, dHead: dh } = spec;
    const layers: LayerWeights[] = [];
    for (let l = 0; l < spec.nLayers; l++) {
      const p = `gpt_neox.layers.${l}`;
      const qkvW = linear(store, `${p}.attention.query_key_value.weight`, d, 3 * d, 'hidden_size'); // [d, H*3*dh]
      const qkvB = store.get(`${p}.attention.query_key_value.bias`, [3 * d], 'hidden_size');
      // Output column of (head h, part k, dim i) in the fused layout is h*3*dh + k*dh + i.
      const part = (k: number) => {
        const w = new Float32Array(d * d);
        const b = new Float32Array(d);
        for (let h = 0; h < H; h++)
          for (let i = 0; i < dh; i++) {
            const src = h * 3 * dh + k * dh + i;
            const dst = h * dh + i;
            b[dst] = qkvB[src];
            for (let r = 0; r < d; r++) w[r * d + dst] = qkvW[r * 3 * d + src];
          }
        return { w, b };
      };
      const [q, k, v] = [part(0), part(1), part(2)];
      layers.push({
        ...NO_EXTRA_NORMS,
        ln1: normWeights(store, `${p}.input_layernorm`, d, true),
        ln2: normWeights(store, `${p}.post_attention_layernorm`, d, true),
        wq: q.w, bq: q.b, wk: k.w, bk: k.b, wv: v.w, bv: v.b,
        wo: linear(store, `${p}.attention.dense.weight`, d, d, 'hidden_size'),
        bo: store.get(`${p}.attention.dense.bias`, [d], 'hidden_size'),
        wUp: linear(store, `${p}.mlp.dense_h_to_4h.weight`, d, f, 'intermediate_size'),
        bUp: store.get(`${p}.mlp.dense_h_to_4h.bias`, [f], 'intermediate_size'),
        wGate: null,
        bGate: null,
        wDown: linear(store, `${p}.mlp.dense_4h_to_h.weight`, f, d, 'intermediate_size'),
        bDown: store.get(`${p}.mlp.dense_4h_to_h.bias`, [d], 'hidden_size'),
      });
    }
    return {
      wte: store.get('gpt_neox.embed_in.weight', [V, d], 'vocab_size, hidden_size'),
      wpe: null,
      layers,
      lnF: normWeights(store, 'gpt_neox.final_layer_norm', d, true),
      wU: store.get('embed_out.weight', [V, d], 'vocab_size, hidden_size'),
      bU: null,
    };
  },
};
