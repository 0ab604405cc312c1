// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title DemoToken
/// @notice A small ERC-20 token plus the kinds of events a real dapp emits, so the watcher has
///         every ABI shape to decode: indexed dynamic types (hashed topics), arrays, bytes,
///         fixed bytes, signed integers, booleans and a tuple.
contract DemoToken {
    /// @notice What `placeOrder` records; emitted whole as a tuple in `Order`.
    struct OrderInfo {
        address maker;
        uint256 amount;
        string memo;
    }

    string public name;
    string public symbol;
    uint8 public constant decimals = 18;
    uint256 public totalSupply;
    address public owner;
    uint256 public nextOrderId = 1;

    mapping(address account => uint256) public balanceOf;
    mapping(address holder => mapping(address spender => uint256)) public allowance;

    // ERC-20 (EIP-20) events.
    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    /// @notice A message addressed to a user's wallet (`to`): lands on topic user:<to>.
    event Message(address indexed from, address indexed to, string text, bytes data);
    /// @notice One operation over many ids and recipients.
    event Batch(address indexed operator, uint256[] ids, address[] recipients, string note);
    /// @notice `label` is indexed, so its topic is keccak256(label), not the string itself.
    event Tagged(bytes32 indexed tag, string indexed label, int256 delta, bool flag, bytes4 selector);
    /// @notice An order recorded by `placeOrder`, with its details as a tuple.
    event Order(uint256 indexed id, OrderInfo order);

    error NotOwner(address caller);
    error InsufficientBalance(address account, uint256 balance, uint256 needed);
    error InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
    error ZeroAddress();
    error LengthMismatch(uint256 ids, uint256 recipients);

    constructor() {
        name = "Demo Token";
        symbol = "DEMO";
        owner = msg.sender;
        _mint(msg.sender, 1_000_000 * 10 ** decimals);
    }

    // --- ERC-20 ---

    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        if (spender == address(0)) revert ZeroAddress();
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < value) revert InsufficientAllowance(msg.sender, allowed, value);
            unchecked {
                allowance[from][msg.sender] = allowed - value;
            }
        }
        _transfer(from, to, value);
        return true;
    }

    /// @notice Create `amount` new tokens for `to` (owner only); emits Transfer from zero.
    function mint(address to, uint256 amount) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _mint(to, amount);
    }

    // --- dapp events ---

    /// @notice Send `text` and `data` to the wallet `to` (emits `Message`).
    function sendMessage(address to, string calldata text, bytes calldata data) external {
        if (to == address(0)) revert ZeroAddress();
        emit Message(msg.sender, to, text, data);
    }

    /// @notice Emits one `Batch` over `ids` and `recipients` (equal lengths).
    function batch(uint256[] calldata ids, address[] calldata recipients, string calldata note)
        external
    {
        if (ids.length != recipients.length) revert LengthMismatch(ids.length, recipients.length);
        emit Batch(msg.sender, ids, recipients, note);
    }

    /// @notice Emits `Tagged`; `selector` is this function's selector (msg.sig).
    function emitTagged(bytes32 tag, string calldata label, int256 delta, bool flag) external {
        emit Tagged(tag, label, delta, flag, msg.sig);
    }

    /// @notice Records an order for `amount` with `memo`; emits `Order` with a fresh id.
    function placeOrder(uint256 amount, string calldata memo) external returns (uint256 id) {
        id = nextOrderId++;
        emit Order(id, OrderInfo({maker: msg.sender, amount: amount, memo: memo}));
    }

    // --- internals ---

    function _transfer(address from, address to, uint256 value) private {
        if (to == address(0)) revert ZeroAddress();
        uint256 balance = balanceOf[from];
        if (balance < value) revert InsufficientBalance(from, balance, value);
        unchecked {
            balanceOf[from] = balance - value;
        }
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }

    function _mint(address to, uint256 amount) private {
        if (to == address(0)) revert ZeroAddress();
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }
}
