<?php
// The server time and the stock ticker from the classic SSE tutorials: a PHP loop that echoes events
// and flushes. fastsse runs ONE of these for every browser (route type = "command").
$prices = ['ACME' => 100.0, 'GLOBEX' => 50.0, 'INITECH' => 20.0];
$id = 0;
$second = 0;
while (true) {
    // The server time, once a second, as its own named event.
    if (time() !== $second) {
        $second = time();
        echo "event: time\ndata: " . date('H:i:s') . "\n\n";
    }
    $symbol = array_rand($prices);
    $change = round((mt_rand(-100, 100) / 100) * $prices[$symbol] * 0.01, 2);
    $prices[$symbol] = max(1, round($prices[$symbol] + $change, 2));
    $id++;
    echo "id: $id\n";
    echo 'event: ' . ($change >= 0 ? 'priceUp' : 'priceDown') . "\n";
    echo 'data: ' . json_encode(['symbol' => $symbol, 'price' => $prices[$symbol], 'change' => $change]) . "\n\n";
    flush();
    usleep(500000);
}
