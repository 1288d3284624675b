// The oplog's Lua scripts on both Lua versions a Redis-protocol server may
// embed: redis-server's 5.1 and Dragonfly's 5.4. Each script must compile with
// luac, and, run by the real interpreter against a small in-memory stand-in for
// `redis`, must hand redis.call only strings or integers (5.4 turns a float into
// "250.0"), reply only integers where it replies numbers (5.4 does not cut
// floats), and fail with an explicit error code. The stand-in is pure logic;
// test/integration/oplog.test.ts runs the same scripts on a real redis-server.
// Debian: apt-get install lua5.1 lua5.4 (scripts/test.sh does so as root).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { APPEND_LUA, LUA_ERR_BAD_ARGS, LUA_ERR_PARTIAL, LUA_SCRIPTS, RAISE_EPOCH_LUA } from '../../src/agent/oplog-scripts.ts';

const dir = mkdtempSync(join(tmpdir(), 'lua-scripts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function has(bin: string): boolean {
  return spawnSync(bin, ['-v'], { stdio: 'ignore' }).error === undefined;
}

// A stand-in for the server: strings, lists, a hash and one stream, enough for
// the oplog scripts. Every argument must be a string or an integer-valued
// number (5.1) / integer (5.4); anything else is a test failure.
const STANDIN = `
local isint
if math.type then isint = function(v) return math.type(v) == 'integer' end
else isint = function(v) return v == math.floor(v) end end
strings, lists, hashes, stream, failxadd = {}, {}, {}, {}, nil
local function argstr(cmd, i, v)
  if type(v) == 'string' then return v end
  if type(v) == 'number' and isint(v) then return tostring(v) end
  error('non-integer argument ' .. i .. ' to ' .. cmd .. ': ' .. tostring(v) .. ' (' .. type(v) .. ')')
end
local function call(cmd, ...)
  local a = {}
  for i = 1, select('#', ...) do a[i] = argstr(cmd, i, (select(i, ...))) end
  if cmd == 'GET' then return strings[a[1]] or false
  elseif cmd == 'SET' then strings[a[1]] = a[2] return {ok = 'OK'}
  elseif cmd == 'DEL' then strings[a[1]] = nil lists[a[1]] = nil return 1
  elseif cmd == 'LLEN' then return #(lists[a[1]] or {})
  elseif cmd == 'LRANGE' then
    local l, out = lists[a[1]] or {}, {}
    local stop = tonumber(a[3]) + 1
    if stop > #l then stop = #l end
    for i = tonumber(a[2]) + 1, stop do out[#out + 1] = l[i] end
    return out
  elseif cmd == 'XADD' then
    if a[2] == failxadd then error('stand-in XADD failure') end
    local last = stream[#stream]
    if last and tonumber((string.match(last[1], '^(%d+)'))) >= tonumber((string.match(a[2], '^(%d+)'))) then error('ID not increasing') end
    local f = {}
    for i = 3, #a do f[#f + 1] = a[i] end
    stream[#stream + 1] = {a[2], f}
    return a[2]
  elseif cmd == 'XTRIM' then return 0
  elseif cmd == 'XREVRANGE' then if #stream > 0 then return {stream[#stream]} end return {}
  elseif cmd == 'HSETNX' then hashes[a[1]] = hashes[a[1]] or {} if hashes[a[1]][a[2]] then return 0 end hashes[a[1]][a[2]] = a[3] return 1
  elseif cmd == 'HGET' then return (hashes[a[1]] or {})[a[2]] or false
  end
  error('stand-in does not know ' .. cmd)
end
redis = {
  call = call,
  pcall = function(...) local ok, r = pcall(call, ...) if ok then return r end return {err = tostring(r)} end,
  error_reply = function(s) return {err = s} end,
}
local function show(v)
  if type(v) == 'number' then
    if isint(v) and (not math.type or math.type(v) == 'integer') then return 'int ' .. string.format('%d', v) end
    return 'float ' .. tostring(v)
  end
  return type(v) .. ' ' .. tostring(v)
end
function run(path)
  local chunk = assert((loadstring or load)(io.open(path):read('*a')))
  local ok, r = pcall(chunk)
  if not ok then print('raised ' .. tostring(r)) return end
  if type(r) == 'table' and r.err then print('err ' .. r.err) return end
  for i = 1, #r do print('reply ' .. show(r[i])) end
end
function dump()
  local names = {}
  for k in pairs(strings) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do print('string ' .. k .. '=' .. strings[k]) end
  for k in pairs(lists) do print('list ' .. k) end
  print('stream ' .. #stream .. (#stream > 0 and (' ' .. stream[1][1] .. '..' .. stream[#stream][1]) or ''))
end
`;

const lit = (s: string): string => JSON.stringify(s); // ASCII test data: a JSON string is a Lua string literal
const luaList = (xs: readonly string[]): string => `{${xs.map(lit).join(', ')}}`;
const fields = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => ['put', `k${from + i}`, `v${from + i}`, String(1000 + from + i)]).flat();

interface Step {
  script: string;
  keys: string[];
  argv: string[];
  /** Lua run before the step, e.g. to fill a stage list. */
  setup?: string;
}

/** Runs the steps in one interpreter (state carries over) and returns each step's output lines, then the final state. */
function runLua(lua: string, steps: Step[]): { steps: string[][]; state: string[] } {
  const scriptFiles = new Map<string, string>();
  let body = STANDIN;
  steps.forEach((s, i) => {
    let file = scriptFiles.get(s.script);
    if (!file) {
      file = join(dir, `script${scriptFiles.size}.lua`);
      writeFileSync(file, s.script);
      scriptFiles.set(s.script, file);
    }
    body += `\n${s.setup ?? ''}\nKEYS = ${luaList(s.keys)}\nARGV = ${luaList(s.argv)}\nprint('--step ${i}')\nrun(${lit(file)})\n`;
  });
  body += `\nprint('--state')\ndump()\n`;
  const main = join(dir, `main-${lua}.lua`);
  writeFileSync(main, body);
  const out = execFileSync(lua, [main], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const [, ...parts] = out.split(/^--(?:step \d+|state)\n/m);
  return { steps: parts.slice(0, -1).map((p) => p.trim().split('\n').filter(Boolean)), state: parts.at(-1)!.trim().split('\n') };
}

const K = { epoch: 'e', head: 'h', log: 'l', epochs: 'es', batch: 'b', stage: 's' };
const raise = (epoch: string, minHead: string): Step => ({ script: RAISE_EPOCH_LUA, keys: [K.epoch, K.head, K.log, K.epochs], argv: [epoch, minHead] });
const append = (epoch: string, n: number, from: number): Step => ({
  script: APPEND_LUA,
  keys: [K.epoch, K.head, K.log, K.batch],
  argv: [epoch, '1000', '120000', String(n), '0', ...fields(n, from)],
});

for (const v of ['5.1', '5.4']) {
  const lua = `lua${v}`;
  const luac = `luac${v}`;
  const present = has(lua) && has(luac);
  if (!present) console.warn(`skipping the Lua ${v} checks: ${lua}/${luac} not found (Debian: apt-get install lua${v}; scripts/test.sh installs it when run as root)`);

  describe.skipIf(!present)(`oplog Lua scripts on Lua ${v}`, () => {
    for (const [name, source] of Object.entries(LUA_SCRIPTS)) {
      it(`${name} compiles with ${luac}`, () => {
        const file = join(dir, `${name}-${v}.lua`);
        writeFileSync(file, source);
        const r = spawnSync(luac, ['-p', file], { encoding: 'utf8' });
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
      });
    }

    it('raise, append and staged append write integer strings and reply integers', () => {
      const staged: Step = {
        script: APPEND_LUA,
        keys: [K.epoch, K.head, K.log, K.batch, K.stage],
        argv: ['10', '1000', '120000', '5000', '250'],
        setup: `lists[${lit(K.stage)}] = ${luaList(fields(5000, 250))}`,
      };
      const r = runLua(lua, [raise('10', '0'), append('10', 250, 0), staged, raise('11', '0')]);
      expect(r.steps).toEqual([
        ['reply int 10', 'reply int 0'],
        ['reply int 1', 'reply int 250'],
        ['reply int 251', 'reply int 5250'],
        ['reply int 11', 'reply int 5250'],
      ]);
      // No "250.0": every stored number is an integer string; the stage is gone.
      expect(r.state).toEqual(['string b=251-5250', `string ${K.epoch}=11`, `string ${K.head}=5250`, 'stream 5250 1-0..5250-0']);
    });

    it('a stale or missing epoch appends nothing and replies integers', () => {
      const r = runLua(lua, [append('10', 3, 0), raise('10', '0'), append('9', 3, 0)]);
      expect(r.steps).toEqual([['reply int 0', 'reply int 0'], ['reply int 10', 'reply int 0'], ['reply int 0', 'reply int 10']]);
      expect(r.state.at(-1)).toBe('stream 0');
    });

    it('a head below the writer\'s minHead (a server back from an older copy) appends nothing and replies -2 and the head', () => {
      const behind: Step = { ...append('10', 2, 0), argv: ['10', '1000', '120000', '2', '9', ...fields(2, 0)] };
      const r = runLua(lua, [raise('10', '0'), append('10', 3, 0), behind]);
      expect(r.steps[2]).toEqual(['reply int -2', 'reply int 3']);
      expect(r.state).toContain(`string ${K.head}=3`);
      expect(r.state.at(-1)).toBe('stream 3 1-0..3-0');
    });

    it('wrong shapes fail with the explicit code, not a Lua error', () => {
      const short: Step = { ...append('10', 2, 0), argv: ['10', '1000', '120000', '2', '0', 'put', 'k', 'v', '1'] };
      const r = runLua(lua, [raise('10', '0'), short, raise('0', '0')]);
      expect(r.steps[1]![0]).toMatch(new RegExp(`^err ${LUA_ERR_BAD_ARGS} `));
      expect(r.steps[2]![0]).toMatch(new RegExp(`^err ${LUA_ERR_BAD_ARGS} `));
    });

    it('an XADD failing part way answers the partial code and leaves the head at the last entry written', () => {
      const r = runLua(lua, [raise('10', '0'), { ...append('10', 5, 0), setup: `failxadd = '4-0'` }]);
      expect(r.steps[1]![0]).toMatch(new RegExp(`^err ${LUA_ERR_PARTIAL} append stopped after seq 3: `));
      expect(r.state).toContain(`string ${K.head}=3`);
    });
  });
}
