// Drives Debian's Chromium through Palisade's WebAuthn flows with CDP virtual authenticators:
// sign in through oidc-provider, register a security key (usb) and a platform authenticator
// (internal) in the portal, sign in with each and reach the application, remove one and be
// refused where it was required. Saves screenshots of the portal and of the MFA prompt.
//
// Environment: APP (the edge origin, https://app.palisade.localhost:PORT), CA (the dev CA
// PEM, trusted through a throwaway NSS database), OUT (where screenshots go), CHROMIUM.
// Prints one line per step; exits 1 with the reason when a step fails.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const APP = process.env.APP;
const OUT = process.env.OUT;
mkdirSync(OUT, { recursive: true });

// Trust the dev CA the way a managed machine would: an NSS database in a throwaway HOME.
const home = mkdtempSync(join(tmpdir(), 'palisade-chromium-'));
const nss = join(home, '.pki', 'nssdb');
mkdirSync(nss, { recursive: true });
execFileSync('certutil', ['-d', `sql:${nss}`, '-N', '--empty-password']);
execFileSync('certutil', ['-d', `sql:${nss}`, '-A', '-t', 'C,,', '-n', 'palisade-dev-ca', '-i', process.env.CA]);

const step = (msg) => console.log(`step: ${msg}`);
function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  env: { ...process.env, HOME: home },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (m) => console.log(`console: ${m.text()}`));
  page.setDefaultTimeout(15000);
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const add = async (transport) => (await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport, hasResidentKey: transport === 'internal',
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  })).authenticatorId;
  // Only one authenticator answers at a time, like a user choosing one.
  const only = async (id, all) => {
    for (const a of all) {
      await cdp.send('WebAuthn.setAutomaticPresenceSimulation', { authenticatorId: a, enabled: a === id });
    }
  };

  const signIn = async (path) => {
    await page.goto(`${APP}${path}`);
    await page.waitForSelector('input[name=login]');
    await page.fill('input[name=login]', 'alice');
    await page.fill('input[name=password]', 'any');
    await page.click('button[type=submit]');
    await page.waitForURL((u) => u.origin === APP);
  };
  const passWebauthn = async (path) => {
    await page.waitForSelector('#webauthn-auth');
    await Promise.all([
      page.waitForURL((u) => u.pathname === path),
      page.click('#webauthn-auth'),
    ]);
  };
  const appAnswer = async () => JSON.parse(await page.locator('body').innerText());

  await signIn('/mfa/start');
  check(page.url().includes('/.palisade/mfa'), `expected the MFA prompt, got ${page.url()}`);
  check((await page.content()).includes('no second factor yet'), 'prompt offers enrollment');
  step('signed in; the MFA prompt offers enrollment');

  // Register a security key (usb), from the prompt's "Set one up": afterwards the portal
  // offers the way back to the application.
  const usb = await add('usb');
  await Promise.all([page.waitForURL(/\/\.palisade\/portal/), page.click('a.button')]);
  await page.fill('#key-name', 'Blue key');
  await Promise.all([page.waitForURL(/done=added/), page.click('#add-security-key')]);
  check((await page.content()).includes('Blue key'), 'the security key is listed');
  const back = page.locator('#continue');
  check((await back.getAttribute('href')) === '/mfa/start', `continue link: ${await back.getAttribute('href')}`);
  check((await back.innerText()).includes('MFA-protected application'), `continue text: ${await back.innerText()}`);
  step('registered a security key; the portal offers "Continue to MFA-protected application"');

  // Back to the application: the prompt offers only what alice holds (a key, no code field).
  await back.click();
  await page.waitForSelector('#webauthn-auth');
  check((await page.locator('#code').count()) === 0, 'no authenticator-app code field without such a factor');
  check(!(await page.content()).includes('authenticator app code'), 'the prompt lists only the methods alice holds');
  // No authenticator answers: the prompt waits, and Cancel is the way out.
  await only(null, [usb]);
  await page.click('#webauthn-auth');
  await page.waitForSelector('#cancel-webauthn:not([hidden])');
  await page.click('#cancel-webauthn');
  await page.waitForFunction(() => document.getElementById('status').textContent === 'Cancelled.');
  check((await page.locator('#cancel-webauthn').isHidden()), 'Cancel is hidden again');
  // A key that holds no credential for alice: a message that says so, not the browser's text.
  const stranger = await add('usb');
  await only(stranger, [usb, stranger]);
  await page.click('#webauthn-auth');
  await page.waitForFunction(() => document.getElementById('status').className === 'error', null, { timeout: 90000 });
  const said = await page.locator('#status').innerText();
  check(said.includes('not registered to your account'), `unregistered key: ${said}`);
  await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: stranger });
  await only(usb, [usb]);
  step('the prompt offers only a key; Cancel and an unregistered key say what happened');

  // Sign in with it: the keys-only application.
  await page.goto(`${APP}/keys/vault`);
  await page.screenshot({ path: join(OUT, 'mfa-prompt.png'), fullPage: true });
  await passWebauthn('/keys/vault');
  const keysView = await appAnswer();
  check(keysView.identity && keysView.identity.verified === true, `upstream view: ${JSON.stringify(keysView)}`);
  check(keysView.identity.claims.amr === 'security_key', `amr: ${JSON.stringify(keysView.identity.claims)}`);
  step('passed the security key; reached the keys-only application');

  // Register this device's platform authenticator (internal), within 10 minutes of the key,
  // with the security key still plugged in and answering: only the platform one may.
  const internal = await add('internal');
  await only(internal, [usb, internal]);
  await cdp.send('WebAuthn.setAutomaticPresenceSimulation', { authenticatorId: usb, enabled: true });
  await page.goto(`${APP}/.palisade/portal`);
  await page.fill('#platform-name', 'This laptop');
  await Promise.all([page.waitForURL(/done=added/), page.click('#add-platform')]);
  check((await page.content()).includes('This laptop'), 'the platform authenticator is listed');
  const kinds = await page.locator('#factors').innerText();
  check(kinds.includes('device (Touch ID, Windows Hello)'), `the list names the kind as the button does: ${kinds}`);
  await only(internal, [usb, internal]);
  await page.screenshot({ path: join(OUT, 'portal.png'), fullPage: true });
  step('registered a platform authenticator');

  // A new session (cookies cleared), signing in with the platform authenticator.
  await context.clearCookies();
  await signIn('/platform/reports');
  check(page.url().includes('/.palisade/mfa'), `expected the MFA prompt, got ${page.url()}`);
  await page.screenshot({ path: join(OUT, 'mfa-prompt-platform.png'), fullPage: true });
  await passWebauthn('/platform/reports');
  const platformView = await appAnswer();
  check(platformView.identity.claims.amr === 'platform', `amr: ${JSON.stringify(platformView.identity.claims)}`);
  step('passed the platform authenticator; reached the platform-only application');

  // Remove the platform factor (passed a minute ago): refused where it was required.
  await page.goto(`${APP}/.palisade/portal`);
  const row = page.locator('tr', { hasText: 'This laptop' });
  await Promise.all([page.waitForURL(/done=removed/), row.locator('button.danger').click()]);
  check(!(await page.content()).includes('This laptop'), 'the platform authenticator is gone');
  await page.goto(`${APP}/platform/reports`);
  check(page.url().includes('/.palisade/mfa'), `expected a challenge, got ${page.url()}`);
  check((await page.content()).includes('id=step-up') || (await page.locator('#step-up').count()) > 0,
    'step-up: the remaining security key does not satisfy the platform-only application');
  await page.screenshot({ path: join(OUT, 'step-up.png'), fullPage: true });
  step('removed the platform authenticator; the platform-only application refuses');

  // The security key still works for the keys-only application in this session.
  await only(usb, [usb, internal]);
  await page.goto(`${APP}/keys/vault`);
  await passWebauthn('/keys/vault');
  step('the security key still opens the keys-only application');
  console.log('ok');
} catch (e) {
  console.log(`FAILED: ${e.message}`);
  for (const p of browser.contexts().flatMap((c) => c.pages())) {
    const status = await p.locator('#status').innerText().catch(() => '');
    console.log(`at ${p.url()} status: ${status}`);
    await p.screenshot({ path: join(OUT, 'failure.png'), fullPage: true }).catch(() => {});
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
