/** Takes the README's screenshot of the web app on a real smear: node dist/scripts/screenshot.js OUT.png */
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { loadModel } from '../src/index.js';
import { buildServer } from '../src/server/app.js';
import { SAMPLES } from '../test/helpers.js';

const out = process.argv[2] ?? 'docs/webapp.png';
const app = await buildServer({ model: await loadModel() });
const url = await app.listen({ port: 0, host: '127.0.0.1' });
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless=new',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
});
const page = await browser.newPage({ viewport: { width: 1360, height: 780 } });
await page.goto(url);
await page.getByTestId('file').setInputFiles([join(SAMPLES, 'BloodImage_00004.jpg'), join(SAMPLES, 'BloodImage_00017.jpg')]);
await page.getByTestId('counts').waitFor();
await page.getByTestId('review-mode').check();
await page.waitForTimeout(500);
await page.screenshot({ path: out });
await browser.close();
await app.close();
console.log(`wrote ${out}`);
