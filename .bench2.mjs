import * as ort from 'onnxruntime-node';
const files = process.argv.slice(2);
const ss = [];
for (const f of files) ss.push(await ort.InferenceSession.create(f, { intraOpNumThreads: 1 }));
const x = new ort.Tensor('float32', new Float32Array(3*512*640).map(()=>Math.random()), [1,3,512,640]);
const t = files.map(()=>[]);
for (let r=0;r<30;r++) for (let j=0;j<ss.length;j++){ const t0=performance.now(); await ss[j].run({image:x}); t[j].push(performance.now()-t0);}
for (let j=0;j<ss.length;j++){ const a=t[j].slice(5).sort((p,q)=>p-q); console.log(files[j], 'p50', a[a.length>>1].toFixed(1), 'min', a[0].toFixed(1)); }
