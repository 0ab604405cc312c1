// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title PlainToken
/// @notice A minimal standard ERC-20 (EIP-20) with 6 decimals: the "any token" of wallet-activity
///         tests (not in [[contracts]]; its transfers reach user:<wallet> through
///         [watch] wallet_activity).
contract PlainToken {
    string public constant name = "Plain Token";
    string public constant symbol = "PLN";
    uint8 public constant decimals = 6;
    uint256 public totalSupply;

    mapping(address account => uint256) public balanceOf;

    event Transfer(address indexed from, address indexed to, uint256 value);

    error InsufficientBalance(address account, uint256 balance, uint256 needed);

    constructor() {
        totalSupply = 1_000_000 * 10 ** decimals;
        balanceOf[msg.sender] = totalSupply;
        emit Transfer(address(0), msg.sender, totalSupply);
    }

    function transfer(address to, uint256 value) external returns (bool) {
        uint256 balance = balanceOf[msg.sender];
        if (balance < value) revert InsufficientBalance(msg.sender, balance, value);
        balanceOf[msg.sender] = balance - value;
        balanceOf[to] += value;
        emit Transfer(msg.sender, to, value);
        return true;
    }
}

/// @title PlainNFT
/// @notice A minimal ERC-721 (EIP-721) emitter: `mint` and `transfer` log the standard
///         `Transfer(from, to, tokenId)` with all three arguments indexed. No approvals.
contract PlainNFT {
    string public constant name = "Plain NFT";
    string public constant symbol = "PNFT";

    mapping(uint256 tokenId => address) public ownerOf;

    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);

    error NotOwner(address caller, uint256 tokenId);

    function mint(address to, uint256 tokenId) external {
        if (ownerOf[tokenId] != address(0)) revert NotOwner(msg.sender, tokenId);
        ownerOf[tokenId] = to;
        emit Transfer(address(0), to, tokenId);
    }

    function transfer(address to, uint256 tokenId) external {
        if (ownerOf[tokenId] != msg.sender) revert NotOwner(msg.sender, tokenId);
        ownerOf[tokenId] = to;
        emit Transfer(msg.sender, to, tokenId);
    }
}

/// @title PlainMulti
/// @notice A minimal ERC-1155 (EIP-1155) emitter: `mint` logs `TransferSingle`, `mintBatch`
///         `TransferBatch` (no balances kept: the events are what the watcher reads).
contract PlainMulti {
    event TransferSingle(address indexed operator, address indexed from, address indexed to,
                         uint256 id, uint256 value);
    event TransferBatch(address indexed operator, address indexed from, address indexed to,
                        uint256[] ids, uint256[] values);

    function mint(address to, uint256 id, uint256 value) external {
        emit TransferSingle(msg.sender, address(0), to, id, value);
    }

    function mintBatch(address to, uint256[] calldata ids, uint256[] calldata values) external {
        emit TransferBatch(msg.sender, address(0), to, ids, values);
    }
}
