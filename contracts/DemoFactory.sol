// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title DemoPair
/// @notice A child contract of `DemoFactory` (a Uniswap-style pair, much reduced): the watcher
///         follows every pair the factory creates (`[[contracts]] factory = {...}`).
contract DemoPair {
    address public immutable factory;
    address public immutable token0;
    address public immutable token1;
    uint112 public reserve0;
    uint112 public reserve1;

    event Swap(address indexed sender, uint256 amountIn, uint256 amountOut, address indexed to);
    event Sync(uint112 reserve0, uint112 reserve1);

    /// @notice Emits `Sync` already in the creation transaction (before the factory's
    ///         `PairCreated`): a child's logs of its creation block must be watched too.
    constructor(address tokenA, address tokenB) {
        factory = msg.sender;
        token0 = tokenA;
        token1 = tokenB;
        reserve0 = 1000;
        reserve1 = 1000;
        emit Sync(reserve0, reserve1);
    }

    /// @notice A make-believe swap: moves the reserves and emits `Swap` then `Sync`.
    function swap(uint112 amountIn, address to) external {
        uint112 amountOut = amountIn / 2;
        reserve0 += amountIn;
        reserve1 = reserve1 > amountOut ? reserve1 - amountOut : 0;
        emit Swap(msg.sender, amountIn, amountOut, to);
        emit Sync(reserve0, reserve1);
    }
}

/// @title DemoFactory
/// @notice Creates `DemoPair` children, announcing each with `PairCreated` (the factory event
///         the watcher discovers children by).
contract DemoFactory {
    address[] public allPairs;

    event PairCreated(address indexed token0, address indexed token1, address pair, uint256 index);

    /// @notice A new pair of `tokenA` and `tokenB` (any addresses: nothing is checked).
    function createPair(address tokenA, address tokenB) external returns (address pair) {
        pair = address(new DemoPair(tokenA, tokenB));
        allPairs.push(pair);
        emit PairCreated(tokenA, tokenB, pair, allPairs.length);
    }

    /// @notice How many pairs exist.
    function allPairsLength() external view returns (uint256) {
        return allPairs.length;
    }
}
