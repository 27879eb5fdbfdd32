import * as ort from 'onnxruntime-node';
import { readFileSync } from 'node:fs';
const file = process.argv[2];
const s = await ort.InferenceSession.create(file, { intraOpNumThreads: 1, enableProfiling: true, profileFilePrefix: '/tmp/ortprof' , graphOptimizationLevel:'all'});
const x = new ort.Tensor('float32', new Float32Array(3*512*640).map(()=>Math.random()), [1,3,512,640]);
for (let i=0;i<20;i++) await s.run({[s.inputNames[0]]: x});
const t0=performance.now(); for (let i=0;i<20;i++) await s.run({[s.inputNames[0]]: x}); console.log('ms', (performance.now()-t0)/20);
const f = s.endProfiling?.(); console.log(f);
