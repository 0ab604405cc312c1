// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title Counter
/// @notice A first contract of your own: replace it with yours. `chainpush compile` turns every
///         contracts/*.sol into abi/<Name>.abi + abi/<Name>.json; `chainpush deploy Counter`
///         deploys it; its events are what chainpush pushes to browsers.
contract Counter {
    uint256 public count;

    /// @notice Emitted on every increment: browsers subscribed to `contract:Counter` see it.
    event Incremented(address indexed by, uint256 amount, uint256 count);

    /// @notice Add `amount` to the count.
    function increment(uint256 amount) external {
        count += amount;
        emit Incremented(msg.sender, amount, count);
    }
}
