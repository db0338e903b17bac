// The Botpress SDK as botd's scripts see it, evaluated in every fresh context before the
// script. It talks to Rust through two functions only: `__host(op, json)` for synchronous work
// (logging, reading a module's source) and `__later(op, json)` for work that needs the turn
// (KV, rendering, replies, HTTP), which Rust performs between job runs and settles through
// `__settle`. Everything crosses as JSON text, so no JS object ever outlives its context.
(function () {
  'use strict';
  const g = globalThis;
  const host = g.__host;
  const later = g.__later;
  delete g.__host;
  delete g.__later;

  const call = (op, arg) => {
    const r = JSON.parse(host(op, JSON.stringify(arg === undefined ? null : arg)));
    if (r.error !== undefined) throw new Error(r.error);
    return r.value;
  };
  const pending = new Map();
  const ask = (op, arg) =>
    new Promise((resolve, reject) => {
      const id = later(op, JSON.stringify(arg === undefined ? null : arg));
      pending.set(id, { resolve, reject });
    });
  Object.defineProperty(g, '__settle', {
    value: (id, ok, json) => {
      const p = pending.get(id);
      pending.delete(id);
      const v = JSON.parse(json);
      if (ok) p.resolve(v);
      else p.reject(new Error(v));
    }
  });

  // Timers: Rust sleeps until the earliest one is due (never past the call's deadline).
  g.setTimeout = (fn, ms, ...rest) => {
    const id = later('sleep', JSON.stringify({ ms: Math.max(0, Number(ms) || 0) }));
    pending.set(id, { resolve: () => (typeof fn === 'function' ? fn(...rest) : undefined), reject() {} });
    return id;
  };
  g.clearTimeout = id => {
    if (pending.delete(id)) call('clearTimer', { id });
  };
  g.setImmediate = (fn, ...rest) => g.setTimeout(fn, 0, ...rest);
  g.setInterval = () => {
    throw new Error('setInterval is not available in botd scripts (a script runs within its deadline)');
  };

  // An object whose missing members throw, naming the call: a script using a part of the
  // SDK botd does not honour fails loudly instead of getting `undefined is not a function`.
  const strict = (name, obj) =>
    new Proxy(obj, {
      get(t, k) {
        if (typeof k === 'symbol' || k in t || k === 'then' || k === 'toJSON') return t[k];
        throw new Error(`${name}.${String(k)} is not available in botd`);
      }
    });

  const text = args =>
    args
      .map(a => (typeof a === 'string' ? a : a instanceof Error ? a.stack || a.message : JSON.stringify(a)))
      .join(' ');
  const logger = {};
  for (const level of ['info', 'warn', 'error', 'debug']) {
    logger[level] = (...args) => call('log', { level, message: text(args) });
  }
  logger.attachError = err => strict('bp.logger', { ...logger, error: (...a) => logger.error(...a, err) });
  logger.forBot = () => strict('bp.logger', logger);
  logger.persist = () => strict('bp.logger', logger);
  g.console = { log: logger.info, info: logger.info, warn: logger.warn, error: logger.error, debug: logger.debug };
  g.printObject = obj => logger.info(JSON.stringify(obj, null, 2));

  const input = JSON.parse(g.__input);
  delete g.__input;
  const state = { user: input.user || {}, temp: input.temp || {}, session: input.session || {} };
  const event = input.event || {};
  event.state = state;
  // Where the conversation is, as Botpress's `event.state.context`: read here, changed only
  // through bp.dialog.jumpTo.
  state.context = input.context || {};
  // Hooks that run outside any conversation (after_bot_mount, after_bot_unmount).
  const outside = input.outside;
  const inConversation = call => {
    if (outside) throw new Error(`${call}: ${outside} runs outside any conversation`);
  };
  if (input.bot !== undefined) state.bot = input.bot;
  const flags = event.flags || {};
  Object.defineProperty(event, 'flags', { value: flags, enumerable: true, writable: true });
  Object.defineProperty(event, 'setFlag', { value: (flag, value) => { flags[flag] = value; } });
  Object.defineProperty(event, 'hasFlag', { value: flag => !!flags[flag] });
  const botId = event.botId;

  const sameBot = (call, id) => {
    if (id !== botId) throw new Error(`${call}: botd scripts can only reach their own bot ("${botId}"), not "${id}"`);
  };
  const path = (obj, p) => String(p).split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
  const kvFor = id => ({
    get: async (key, p) => {
      sameBot('bp.kvs.get', id);
      const v = await ask('kvGet', { key });
      return p ? path(v, p) : v;
    },
    set: async (key, value, p) => {
      sameBot('bp.kvs.set', id);
      if (p) {
        const root = (await ask('kvGet', { key })) || {};
        const keys = String(p).split('.');
        let o = root;
        for (const k of keys.slice(0, -1)) o = o[k] && typeof o[k] === 'object' ? o[k] : (o[k] = {});
        o[keys[keys.length - 1]] = value;
        value = root;
      }
      await ask('kvSet', { key, value: value === undefined ? null : value });
    },
    delete: async key => {
      sameBot('bp.kvs.delete', id);
      await ask('kvDelete', { key });
    },
    exists: async key => {
      sameBot('bp.kvs.exists', id);
      return (await ask('kvGet', { key })) != null;
    }
  });
  const kvs = {
    get: (id, key, p) => kvFor(id).get(key, p),
    set: (id, key, value, p) => kvFor(id).set(key, value, p),
    delete: (id, key) => kvFor(id).delete(key),
    exists: (id, key) => kvFor(id).exists(key),
    forBot: id => strict('bp.kvs.forBot()', kvFor(id))
  };

  const currentUser = (call, channel, id) => {
    if (channel !== event.channel || id !== event.target) {
      throw new Error(`${call}: botd scripts can only reach the user of the current event`);
    }
  };
  const users = {
    getAttributes: async (channel, id) => {
      currentUser('bp.users.getAttributes', channel, id);
      return JSON.parse(JSON.stringify(state.user));
    },
    updateAttributes: async (channel, id, attributes) => {
      currentUser('bp.users.updateAttributes', channel, id);
      Object.assign(state.user, attributes);
    },
    setAttributes: async (channel, id, attributes) => {
      currentUser('bp.users.setAttributes', channel, id);
      for (const k of Object.keys(state.user)) delete state.user[k];
      Object.assign(state.user, attributes);
    },
    getOrCreateUser: async (channel, id) => {
      currentUser('bp.users.getOrCreateUser', channel, id);
      return { id, channel, attributes: JSON.parse(JSON.stringify(state.user)) };
    }
  };

  const cms = {
    // botd renders with the conversation's scope, as a `say` does: the script's changes so
    // far go along, so what it just wrote is what the element shows.
    renderElement: (contentId, args, destination) =>
      ask('render', { contentId, args: args || {}, state: { user: state.user, temp: state.temp, session: state.session } })
  };
  const events = {
    replyToEvent: async (destination, payloads) => {
      inConversation('bp.events.replyToEvent');
      await ask('reply', { payloads: Array.isArray(payloads) ? payloads : [payloads] });
    },
    sendEvent: async ev => {
      inConversation('bp.events.sendEvent');
      if (!ev || ev.target !== event.target || ev.channel !== event.channel) {
        throw new Error('bp.events.sendEvent: botd scripts can only send to the user of the current event');
      }
      await ask('reply', { payloads: [ev.payload] });
    }
  };

  const dialog = {
    createId: destination => {
      const d = destination || {};
      return d.threadId ? `${d.channel}::${d.target}::${d.threadId}` : `${d.channel}::${d.target}`;
    },
    // Botpress's jumpTo: the conversation goes on from `flowName` at `nodeName` (or its start
    // node), past that node's onEnter, once the current instruction or hook is done.
    jumpTo: async (sessionId, ev, flowName, nodeName) => {
      inConversation('bp.dialog.jumpTo');
      if (!ev || ev.target !== event.target || ev.botId !== botId) {
        throw new Error('bp.dialog.jumpTo: botd scripts can only move the conversation of the current event');
      }
      const context = await ask('jump', { flow: String(flowName), node: nodeName == null ? null : String(nodeName) });
      state.context = context;
      if (ev.state && ev.state !== state) ev.state.context = context;
    }
  };
  const config = {
    getModuleConfig: moduleId => ask('moduleConfig', { module: String(moduleId), forBot: false }),
    getModuleConfigForBot: async (moduleId, id) => {
      sameBot('bp.config.getModuleConfigForBot', id);
      return ask('moduleConfig', { module: String(moduleId), forBot: true });
    },
    getBotpressConfig: () => ask('botpressConfig')
  };

  const IO = {
    WellKnownFlags: {
      SKIP_DIALOG_ENGINE: 'skip-dialog-engine',
      SKIP_QNA_PROCESSING: 'skip-qna',
      FORCE_PERSIST_STATE: 'force-persist-state'
    }
  };

  g.bp = strict('bp', {
    logger: strict('bp.logger', logger),
    kvs: strict('bp.kvs', kvs),
    users: strict('bp.users', users),
    cms: strict('bp.cms', cms),
    events: strict('bp.events', events),
    dialog: strict('bp.dialog', dialog),
    config: strict('bp.config', config),
    IO
  });

  // axios as the HTTP shim: Rust performs the request (ureq, with a timeout inside the call's
  // deadline); like axios, a status of 400 or more rejects with `error.response`.
  const request = async config => {
    const method = String(config.method || 'get').toUpperCase();
    let url = String(config.url || '');
    if (config.baseURL && !/^https?:/i.test(url)) url = config.baseURL.replace(/\/$/, '') + '/' + url.replace(/^\//, '');
    if (config.params) {
      const q = Object.entries(config.params)
        .filter(([, v]) => v !== undefined && v !== null)
        .map(([k, v]) => encodeURIComponent(k) + '=' + encodeURIComponent(v))
        .join('&');
      if (q) url += (url.includes('?') ? '&' : '?') + q;
    }
    const headers = { ...(config.headers || {}) };
    let body = null;
    if (config.data !== undefined && config.data !== null) {
      if (typeof config.data === 'string') body = config.data;
      else {
        body = JSON.stringify(config.data);
        if (!Object.keys(headers).some(h => h.toLowerCase() === 'content-type')) headers['Content-Type'] = 'application/json';
      }
    }
    const r = await ask('http', { method, url, headers, body, timeout: config.timeout || 0 });
    let data = r.body;
    try {
      data = JSON.parse(r.body);
    } catch (e) {}
    const response = { status: r.status, statusText: r.statusText, data, headers: r.headers, config };
    if (r.status >= 400) {
      const err = new Error(`Request failed with status code ${r.status}`);
      err.response = response;
      err.config = config;
      throw err;
    }
    return response;
  };
  const axios = (urlOrConfig, config) =>
    typeof urlOrConfig === 'string' ? request({ ...(config || {}), url: urlOrConfig }) : request(urlOrConfig || {});
  axios.request = request;
  for (const m of ['get', 'delete', 'head', 'options']) axios[m] = (url, config) => request({ ...(config || {}), url, method: m });
  for (const m of ['post', 'put', 'patch']) axios[m] = (url, data, config) => request({ ...(config || {}), url, data, method: m });
  axios.create = defaults => {
    const inst = (u, c) => axios(typeof u === 'string' ? { ...defaults, ...(c || {}), url: u } : { ...defaults, ...u });
    for (const m of ['get', 'delete', 'head', 'options']) inst[m] = (url, c) => request({ ...defaults, ...(c || {}), url, method: m });
    for (const m of ['post', 'put', 'patch']) inst[m] = (url, data, c) => request({ ...defaults, ...(c || {}), url, data, method: m });
    return inst;
  };
  axios.default = axios;
  g.axios = axios;

  // CommonJS: Rust resolves and reads the file (the bot's own files and pure-JS packages under
  // node_modules, nothing else); each module runs once per context.
  const cache = new Map();
  const makeRequire = dir => spec => {
    if (spec === 'axios') return axios;
    const found = call('resolve', { dir, spec });
    if (cache.has(found.path)) return cache.get(found.path).exports;
    const module = { exports: {}, id: found.path, filename: found.path };
    cache.set(found.path, module);
    if (found.json) {
      module.exports = JSON.parse(found.source);
      return module.exports;
    }
    const fn = g.__compileModule(found.source, found.path);
    fn.call(module.exports, module.exports, makeRequire(found.dir), module, found.path, found.dir);
    return module.exports;
  };
  Object.defineProperty(g, '__makeRequire', { value: makeRequire });

  g.process = { env: input.env || {}, HOST: input.host, PORT: input.port, EXTERNAL_URL: input.externalUrl };
  Object.defineProperty(g, '__args', { value: input.args || {} });
  Object.defineProperty(g, '__extra', { value: input.extra || {} });
  Object.defineProperty(g, '__event', { value: event });
  Object.defineProperty(g, '__state', { value: state });
  Object.defineProperty(g, '__outcome', { value: {}, writable: false });
})();
