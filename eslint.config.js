// Lint config: typescript-eslint's recommended rules, type-aware where it pays
// (floating promises are the classic leak in long-running agents).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'charts/**', 'tools/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
  {
    // What the per-pod processes (agent, reference master) load. An ES import of
    // a built-in evaluates every export of it, lazy ones included: node:fs's
    // `promises` loads node:readline, node:util's and node:net's load worker,
    // diff and address-list modules, node:crypto's `webcrypto`, node:http's
    // undici and http2. process.getBuiltinModule() returns the module without
    // that: up to ~2 MB RSS per process early on, within the bench's spread once
    // settled, except node:http's undici (~12 MB) (docs/footprint.md).
    // test/integration/module-footprint.test.ts checks the outcome.
    files: [
      'src/agent/**/*.ts',
      'src/kvmaster/**/*.ts',
      'src/lib/resp/**/*.ts',
      'src/lib/etcd-http/**/*.ts',
      'src/lib/{storeclients,log,keys,time,lines,labels,crc32c}.ts',
      'src/cli/{main,command,signals}.ts',
      'src/cli/commands/{index,agent,kvmaster}.ts',
    ],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: ['node:fs', 'node:fs/promises', 'node:util', 'node:crypto', 'node:net', 'node:http'].map((name) => ({
            name,
            allowTypeImports: true,
            message: `use process.getBuiltinModule('${name}') instead: an ES import of it loads modules this per-pod process never uses (see eslint.config.js).`,
          })),
        },
      ],
    },
  },
  {
    files: ['bin/**/*.js', 'eslint.config.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
  },
);
