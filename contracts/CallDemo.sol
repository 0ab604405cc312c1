// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title CallDemo
/// @notice The geth tutorial's demo contract: a view call returns 2020 until someone changes it.
contract CallDemo {
    uint256 private _value = 2020;

    /// @notice Emitted by every `set`, also when the value does not change.
    event ValueChanged(address indexed by, uint256 oldValue, uint256 newValue);

    /// @notice The stored value (2020 after deployment).
    function get() external view returns (uint256) {
        return _value;
    }

    /// @notice Store `newValue` and emit `ValueChanged`.
    function set(uint256 newValue) external {
        uint256 oldValue = _value;
        _value = newValue;
        emit ValueChanged(msg.sender, oldValue, newValue);
    }
}
