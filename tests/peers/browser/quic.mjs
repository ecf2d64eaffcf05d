// Drives Debian's Chromium over HTTP/3 (QUIC) to a Palisade edge: sign in through
// oidc-provider, register and pass a security key (a CDP virtual authenticator), reach the
// application, and check that the page and the upstream both saw HTTP/3.
//
// Chromium only uses QUIC for an origin it was told about (Alt-Svc from an earlier answer, or
// --origin-to-force-quic-on), and for QUIC it does not accept a certificate that chains to a
// locally added root unless that certificate's key is also named in
// --ignore-certificate-errors-spki-list (base64 SHA-256 of its SubjectPublicKeyInfo). The
// certificate is still checked against the dev CA in the NSS database for TCP. NETLOG=FILE
// writes Chromium's net log there, for a look at a failed handshake.
//
// Environment: APP (https://app.palisade.localhost:PORT), CA (the dev CA PEM), LEAF (the edge's
// serving certificate PEM), CHROMIUM. Prints one line per step; exits 1 with the reason when a
// step fails.
import { execFileSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const APP = process.env.APP;
const origin = new URL(APP);

const home = mkdtempSync(join(tmpdir(), 'palisade-chromium-quic-'));
const nss = join(home, '.pki', 'nssdb');
mkdirSync(nss, { recursive: true });
execFileSync('certutil', ['-d', `sql:${nss}`, '-N', '--empty-password']);
execFileSync('certutil', ['-d', `sql:${nss}`, '-A', '-t', 'C,,', '-n', 'palisade-dev-ca', '-i', process.env.CA]);
const spki = createHash('sha256')
  .update(new X509Certificate(readFileSync(process.env.LEAF)).publicKey.export({ type: 'spki', format: 'der' }))
  .digest('base64');

const step = (msg) => console.log(`step: ${msg}`);
function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  env: { ...process.env, HOME: home },
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--enable-quic',
    `--origin-to-force-quic-on=${origin.hostname}:${origin.port}`,
    // Chromium resolves *.localhost to ::1 as well and tries that first for QUIC (there is no
    // happy-eyeballs fallback as for TCP); the edge listens on 127.0.0.1 only.
    `--host-resolver-rules=MAP ${origin.hostname} 127.0.0.1`,
    `--ignore-certificate-errors-spki-list=${spki}`, ...(process.env.NETLOG ? [`--log-net-log=${process.env.NETLOG}`, '--net-log-capture-mode=Everything'] : [])],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'usb', hasResidentKey: false,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  const protocol = () => page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);

  await page.goto(`${APP}/mfa/start`);
  await page.waitForSelector('input[name=login]');
  await page.fill('input[name=login]', 'alice');
  await page.fill('input[name=password]', 'any');
  await page.click('button[type=submit]');
  await page.waitForURL((u) => u.origin === APP);
  check(page.url().includes('/.palisade/mfa'), `expected the MFA prompt, got ${page.url()}`);
  const signedIn = await protocol();
  check(signedIn === 'h3', `the MFA prompt came over ${signedIn}`);
  step('signed in through oidc-provider; the MFA prompt came over h3');

  await Promise.all([page.waitForURL(/\/\.palisade\/portal/), page.click('a.button')]);
  await page.fill('#key-name', 'QUIC key');
  await Promise.all([page.waitForURL(/done=added/), page.click('#add-security-key')]);
  check((await page.content()).includes('QUIC key'), 'the security key is listed');
  step(`registered a security key in the portal over ${await protocol()}`);

  await page.locator('#continue').click();
  await page.waitForSelector('#webauthn-auth');
  await Promise.all([page.waitForURL((u) => u.pathname === '/mfa/start'), page.click('#webauthn-auth')]);
  const answer = JSON.parse(await page.locator('body').innerText());
  check(answer.identity && answer.identity.verified === true, `upstream view: ${JSON.stringify(answer)}`);
  check(answer.identity.claims.amr === 'security_key', `amr: ${JSON.stringify(answer.identity.claims)}`);
  check(answer.identity.claims.proto === 'h3', `the assertion says ${answer.identity.claims.proto}`);
  check(answer.headers['x-palisade-protocol'] === 'h3', `the upstream was told ${answer.headers['x-palisade-protocol']}`);
  const reached = await protocol();
  check(reached === 'h3', `the application page came over ${reached}`);
  step('passed the key; reached the application over h3, and the upstream saw h3');
  console.log('ok');
} catch (e) {
  console.log(`FAILED: ${e.message}`);
  for (const p of browser.contexts().flatMap((c) => c.pages())) {
    console.log(`at ${p.url()}: ${(await p.content().catch(() => '')).slice(0, 400)}`);
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
