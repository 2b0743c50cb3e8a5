// Keys: the signed-in user's API keys.
import { h } from '../dom.js';
import { keyManager, userKeys } from './keylist.js';

export function render(ctx) {
  const parts = (ctx.session.state.apiKey || '').split('_');
  const currentKeyId = parts.length >= 3 ? parts[1] : null;
  return {
    el: h('section', {}, h('h1', {}, 'Keys'),
      h('p', {}, 'Static API keys are exchanged at POST /token for short-lived tokens. Revoking a key stops new tokens at once.'),
      keyManager(ctx, userKeys(ctx.client), currentKeyId)),
  };
}
