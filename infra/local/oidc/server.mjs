// The local stack's OpenID Connect provider: the certified `oidc-provider` package, configured
// like the production tenant (authorization code + PKCE, RS256 JWT access tokens for our API
// audience carrying `permissions`, the creator id claim and the roles claim).
//
// Sign in with any password and one of these login names (oidc-provider's dev interactions):
//   admin                 -> permissions [admin]
//   ops                   -> deals:read deals:read:all offers:write creators:read creators:write
//   creator:<uuid>        -> deals:read, scoped to that creator (role "creator")
//   creator               -> role "creator" WITHOUT a creator id (the API refuses it: 403)
//
// Settings (environment): OIDC_PROVIDER_PORT (18900), OIDC_PROVIDER_ISSUER
// (http://127.0.0.1:<port>), OIDC_AUDIENCE, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET,
// OIDC_REDIRECT_URIS (comma-separated), OIDC_PROVIDER_KEYS (a JWKS file, created on first
// start, mode 0600), OIDC_ACCESS_TOKEN_TTL (seconds, 600).
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

import Provider from 'oidc-provider';

const env = process.env;
const port = Number(env.OIDC_PROVIDER_PORT || 18900);
const issuer = env.OIDC_PROVIDER_ISSUER || `http://127.0.0.1:${port}`;
const audience = env.OIDC_AUDIENCE || 'https://api.spacemusic.local';
const clientId = env.OIDC_CLIENT_ID || 'spacemusic-admin';
const clientSecret = env.OIDC_CLIENT_SECRET || 'local-oidc-client-secret-not-for-production';
const redirectUris = (env.OIDC_REDIRECT_URIS || 'http://127.0.0.1:8080/auth/oidc/callback')
  .split(',')
  .map((u) => u.trim())
  .filter(Boolean);
const keysFile = env.OIDC_PROVIDER_KEYS || '.local/oidc/jwks.json';
const accessTokenTtl = Number(env.OIDC_ACCESS_TOKEN_TTL || 600);

const CREATOR_CLAIM = 'https://spacemusic.app/creator_id';
const ROLES_CLAIM = 'https://spacemusic.app/roles';
const STAFF = ['deals:read', 'deals:read:all', 'offers:write', 'creators:read', 'creators:write'];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function signingKeys() {
  if (existsSync(keysFile)) return JSON.parse(readFileSync(keysFile, 'utf8'));
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: `local-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
  mkdirSync(dirname(keysFile), { recursive: true });
  writeFileSync(keysFile, JSON.stringify({ keys: [jwk] }), { mode: 0o600 });
  return { keys: [jwk] };
}

function identity(accountId) {
  if (accountId === 'admin') return { permissions: ['admin'], roles: ['admin'] };
  if (accountId === 'ops') return { permissions: STAFF, roles: ['ops'] };
  if (accountId === 'creator') return { permissions: ['deals:read'], roles: ['creator'] };
  if (accountId.startsWith('creator:') && UUID.test(accountId.slice(8))) {
    return { permissions: ['deals:read'], roles: ['creator'], creatorId: accountId.slice(8).toLowerCase() };
  }
  return { permissions: [], roles: [] };
}

const configuration = {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: signingKeys(),
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'deals:read'],
  claims: { openid: ['sub'], profile: ['name'] },
  ttl: { AccessToken: accessTokenTtl, AuthorizationCode: 60, IdToken: 3600, Interaction: 600, Session: 3600, Grant: 3600 },
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator !== audience) throw new Error(`unknown resource ${resourceIndicator}`);
        return {
          scope: 'deals:read',
          audience,
          accessTokenTTL: accessTokenTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  async findAccount(ctx, accountId) {
    return { accountId, claims: async () => ({ sub: accountId, name: accountId }) };
  },
  async extraTokenClaims(ctx, token) {
    if (!token.accountId) return undefined;
    const who = identity(token.accountId);
    const claims = { permissions: who.permissions, [ROLES_CLAIM]: who.roles };
    if (who.creatorId) claims[CREATOR_CLAIM] = who.creatorId;
    return claims;
  },
  // First-party client: consent is implied (as in an Auth0 first-party application).
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile');
    grant.addResourceScope(audience, 'deals:read');
    await grant.save();
    return grant;
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, err) => console.error(JSON.stringify({ event: 'oidc_server_error', error: String(err) })));
provider.listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'oidc_provider_listening', issuer, port, client_id: clientId, redirect_uris: redirectUris }));
});
