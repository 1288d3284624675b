import { defineConfig } from 'vitest/config';

// Three projects, cheapest first. Integration and e2e tests start real etcd,
// Redis-protocol and kube-apiserver processes on free loopback ports; each
// file owns its processes, so files may run side by side, but the machine has
// two cores and failover tests measure lease expiry, so those run one file at a time.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 10_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
