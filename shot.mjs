import { chromium } from 'playwright-core';
const b = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
const p = await b.newPage({ viewport: { width: 1280, height: 1400 } });
await p.goto('file://' + process.argv[2]);
const h = await p.evaluate(() => document.body.scrollHeight);
for (let y = 0, i = 0; y < h && i < 12; y += 1400, i++) { await p.evaluate((yy) => window.scrollTo(0, yy), y); await p.screenshot({ path: `${process.argv[3]}_${i}.png` }); }
console.log(h);
await b.close();
