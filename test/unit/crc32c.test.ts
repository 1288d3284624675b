import { describe, expect, it } from 'vitest';
import { crc32c } from '../../src/lib/crc32c.ts';

describe('crc32c', () => {
  it('matches the published check value and RFC 3720 vectors', () => {
    expect(crc32c('123456789')).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa); // 32 zero bytes
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c('')).toBe(0);
  });

  it('hashes strings as their UTF-8 bytes', () => {
    expect(crc32c('größe')).toBe(crc32c(Buffer.from('größe', 'utf8')));
    expect(crc32c('a')).not.toBe(crc32c('b'));
  });
});
