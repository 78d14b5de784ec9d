// Test OAuth 2.0 authorization server for popfetch (oidc-provider 9.x, loopback only).
// Env: OAUTH_PORT (0 or unset = pick a free port), OAUTH_HS256_KEY (shared with Dovecot),
//      OAUTH_ACCOUNT (default subject, default "alice"), OAUTH_AT_TTL (s, default 3600),
//      OAUTH_DEVICE_INTERVAL (device-flow poll interval advertised, s, default 1),
//      OAUTH_TOKEN_DELAY_MS (delay of a successful refresh response, after the new
//      tokens are stored, default 0: lets a test kill the client in that window),
//      OAUTH_DEBUG (log each interaction prompt to stderr).
// Prints one line "READY <issuer>" on stdout once listening. State is in memory only.
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.env.OAUTH_PORT ?? 0);
const hsKey = Buffer.from(process.env.OAUTH_HS256_KEY ?? 'popfetch-test-oauth-key-0123456789');
const defaultAccount = process.env.OAUTH_ACCOUNT ?? 'alice';
const atTtl = Number(process.env.OAUTH_AT_TTL ?? 3600);
const deviceInterval = Number(process.env.OAUTH_DEVICE_INTERVAL ?? 1);
const tokenDelayMs = Number(process.env.OAUTH_TOKEN_DELAY_MS ?? 0);
const RESOURCE = 'urn:popfetch:pop3';
// The scopes popfetch's presets ask for (Microsoft, Google) besides our own "pop3".
const MAIL_SCOPES = ['pop3', 'https://outlook.office.com/POP.AccessAsUser.All', 'https://mail.google.com/'];

// Refresh-token rotation as Microsoft does it, but crash-tolerant: a refresh returns a
// new token and the presented one keeps working until its successor is used once.
// oidc-provider's own rotation marks the old token consumed and revokes the whole grant
// when it comes back; here `consume` is a no-op for refresh tokens and the middleware
// below retires a token's predecessor instead.
const predecessor = new Map(); // refresh token -> the token it was issued for
const retired = new Set(); // refresh tokens refused from now on

// In-memory storage (like oidc-provider's dev adapter, without its 1000-entry LRU).
const store = new Map(); // key -> { payload, expiresAt }
const grants = new Map(); // grantId -> Set of keys
const live = (key) => {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.payload;
};
const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode']);

class Adapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    store.set(key, { payload, expiresAt });
    if (grantable.has(this.model) && payload.grantId) {
      if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
      grants.get(payload.grantId).add(key);
    }
    if (this.model === 'Session') store.set(`sessionUid:${payload.uid}`, { payload: id });
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, { payload: id, expiresAt });
  }

  async find(id) {
    if (this.model === 'RefreshToken' && retired.has(id)) return undefined;
    return live(this.key(id));
  }

  async findByUid(uid) { return this.find(live(`sessionUid:${uid}`)); }

  async findByUserCode(userCode) { return this.find(live(`userCode:${userCode}`)); }

  async consume(id) {
    if (this.model === 'RefreshToken') return; // see "predecessor" above
    const payload = live(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const key of grants.get(grantId) ?? []) store.delete(key);
    grants.delete(grantId);
  }
}

const server = http.createServer();
await new Promise((r) => server.listen(port, '127.0.0.1', r));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  adapter: Adapter,
  clients: [{
    client_id: 'popfetch',
    token_endpoint_auth_method: 'none', // public client, no secret
    application_type: 'native', // RFC 8252: loopback redirect on any port
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'authorization_code', 'refresh_token'],
    response_types: ['code'],
    // popfetch listens on http://127.0.0.1:PORT/ (http://localhost:PORT/ for Microsoft).
    redirect_uris: ['http://127.0.0.1/', 'http://localhost/'],
  }],
  pkce: { required: () => true }, // S256 only (the default methods)
  rotateRefreshToken: true,
  scopes: ['openid', 'offline_access', ...MAIL_SCOPES],
  cookies: { keys: ['popfetch-test-cookie-key'] },
  ttl: {
    AccessToken: atTtl, DeviceCode: 600, AuthorizationCode: 60, Interaction: 600,
    Grant: 14 * 24 * 3600, Session: 14 * 24 * 3600, RefreshToken: 14 * 24 * 3600,
  },
  features: {
    devInteractions: { enabled: false }, // we auto-approve below
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: MAIL_SCOPES.join(' '),
        audience: RESOURCE,
        accessTokenTTL: atTtl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'HS256', key: hsKey } }, // no kid: Dovecot reads .../HS256/default
      }),
    },
  },
  // Dovecot 2.3.19 rejects any JWT whose header typ is not exactly "JWT";
  // oidc-provider defaults to RFC 9068 "at+jwt".
  formats: { customizers: { jwt: (ctx, token, jwt) => { jwt.header = { typ: 'JWT' }; } } },
  // Every subject exists; it is the Dovecot username (claim "sub").
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  // Like Microsoft: a refresh token whenever the client may use the grant (oidc-provider
  // drops offline_access from /auth requests without prompt=consent).
  issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
  expiresWithSession: () => false,
});
provider.proxy = false;

const counts = { refresh_token: 0, device_code: 0, authorization_code: 0, revocation: 0 };
const GRANT_NAMES = {
  refresh_token: 'refresh_token',
  authorization_code: 'authorization_code',
  'urn:ietf:params:oauth:grant-type:device_code': 'device_code',
};
provider.use(async (ctx, next) => {
  await next();
  if (ctx.method !== 'POST' || ctx.status !== 200) return;
  if (ctx.path === '/device/auth' && ctx.body?.device_code) {
    // oidc-provider omits "interval" (clients then wait 5 s, RFC 8628 3.2).
    ctx.body.interval = deviceInterval;
  } else if (ctx.path === '/token/revocation') {
    counts.revocation += 1;
  } else if (ctx.path === '/token') {
    const params = ctx.oidc?.params ?? {};
    const name = GRANT_NAMES[params.grant_type];
    if (name) counts[name] += 1;
    if (name !== 'refresh_token') return;
    const presented = params.refresh_token;
    const issued = ctx.body?.refresh_token;
    // The presented token's predecessor is now known to be replaced for good.
    if (predecessor.has(presented)) retired.add(predecessor.get(presented));
    if (issued && issued !== presented) predecessor.set(issued, presented);
    if (tokenDelayMs > 0) await new Promise((r) => setTimeout(r, tokenDelayMs));
  }
});

// Auto-approving interaction: the user logs in as ?account=NAME on the interaction URL,
// else login_hint, else OAUTH_ACCOUNT, and grants everything requested.
// account=deny makes the user refuse (access_denied).
async function interaction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    const { params } = details;
    if (process.env.OAUTH_DEBUG) console.error("interaction", JSON.stringify(details.prompt), JSON.stringify(params));
    const query = new URL(req.url, issuer).searchParams;
    const account = query.get('account') || params.login_hint || defaultAccount;
    if (account === 'deny') {
      return provider.interactionFinished(req, res,
        { error: 'access_denied', error_description: 'user denied' }, { mergeWithLastSubmission: false });
    }
    const result = { login: { accountId: account } };
    const sameAccount = details.session?.accountId === account;
    const grant = (details.grantId && sameAccount && await provider.Grant.find(details.grantId))
      || new provider.Grant({ accountId: account, clientId: params.client_id });
    const requested = (params.scope ?? '').split(' ').filter(Boolean);
    // The mail scopes are listed in `scopes` too (so requests may carry them), which
    // makes them OIDC scopes the consent must cover as well as resource scopes.
    if (requested.length) grant.addOIDCScope(requested.join(' '));
    const mail = requested.filter((s) => MAIL_SCOPES.includes(s));
    grant.addResourceScope(RESOURCE, (mail.length ? mail : ['pop3']).join(' '));
    result.consent = { grantId: await grant.save() };
    return provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  } catch (err) {
    res.statusCode = 400;
    res.end(String(err));
  }
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url === '/_test/counts' && req.method === 'GET') {
    res.setHeader('content-type', 'application/json');
    return void res.end(JSON.stringify(counts));
  }
  if (req.url.startsWith('/interaction/')) return void interaction(req, res);
  return callback(req, res);
});
process.on('SIGTERM', () => process.exit(0));
console.log(`READY ${issuer}`);
