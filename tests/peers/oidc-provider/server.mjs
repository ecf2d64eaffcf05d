// A real OpenID provider for Palisade's end-to-end tests: the certified `oidc-provider`, with
// one confidential client and three users, listening on 127.0.0.1 (port from $PORT, 0 = any).
// It prints one JSON line, {"issuer": "..."}, once it listens.
//
// Environment: CLIENT_ID, CLIENT_SECRET, REDIRECT_URIS (comma-separated), PORT.
// Login (devInteractions): any password; the login name is the subject.
import http from 'node:http';
import Provider from 'oidc-provider';

// stdout carries only the JSON line above; everything the provider logs goes to stderr.
console.log = console.info = (...args) => console.error(...args);

const USERS = {
  alice: { email: 'alice@example.com', name: 'Alice Admin', groups: ['engineering', 'admins'] },
  bob: { email: 'bob@example.com', name: 'Bob Builder', groups: ['engineering'] },
  carol: { email: 'carol@partner.example', name: 'Carol Contractor', groups: ['partners'] },
};

const server = http.createServer();
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: process.env.CLIENT_ID,
      client_secret: process.env.CLIENT_SECRET,
      redirect_uris: process.env.REDIRECT_URIS.split(','),
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    conformIdTokenClaims: false,
    scopes: ['openid', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    features: { devInteractions: { enabled: true } },
    pkce: { required: () => true },
    async findAccount(ctx, sub) {
      const u = USERS[sub] ?? { email: `${sub}@example.com`, name: sub, groups: [] };
      return {
        accountId: sub,
        async claims() {
          return { sub, email: u.email, email_verified: true, name: u.name, groups: u.groups };
        },
      };
    },
    // Grant the requested scopes at once, so the flow has no consent step.
    async loadExistingGrant(ctx) {
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email profile groups');
      await grant.save();
      return grant;
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
