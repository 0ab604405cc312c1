// SPDX-License-Identifier: MIT
//
// Hardhat 2 as an alternative node (`npx hardhat node --hostname 127.0.0.1`) and compiler
// (`npx hardhat compile`), both offline.
//
// Hardhat normally downloads solc from binaries.soliditylang.org, which these machines cannot
// reach (ENVIRONMENT.md). The subtask below hands it the npm `solc` package's wasm build instead,
// the same compiler watcher/tools/solc wraps for `chainpush compile`.
//
// The compiler settings repeat watcher/compile.py's COMPILER_SETTINGS so that both produce the
// same ABI and bytecode (tests/integration/test_hardhat.py checks it); change them together.
'use strict';

const { subtask } = require('hardhat/config');
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require('hardhat/builtin-tasks/task-names');

const solc = require('solc');

// "0.8.37+commit.f401782d.Emscripten.clang" -> "0.8.37" and "0.8.37+commit.f401782d"
const SOLC_LONG_VERSION = solc.version().replace(/\.Emscripten\.clang$/, '');
const SOLC_VERSION = SOLC_LONG_VERSION.split('+')[0];

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) {
    // Only the npm solc is available offline; say so instead of failing on a download.
    throw new Error(
      `solc ${args.solcVersion} requested but only the npm solc ${SOLC_VERSION} is available ` +
        'offline (node_modules/solc); align solidity.version in hardhat.config.js'
    );
  }
  return {
    compilerPath: require.resolve('solc/soljson.js'),
    isSolcJs: true,
    version: SOLC_VERSION,
    longVersion: SOLC_LONG_VERSION,
  };
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: SOLC_VERSION,
    settings: {
      evmVersion: 'cancun',
      metadata: { bytecodeHash: 'none' },
      optimizer: { enabled: true, runs: 200 },
    },
  },
  networks: {
    hardhat: {
      chainId: 31337,
    },
  },
  paths: {
    sources: './contracts',
  },
};
